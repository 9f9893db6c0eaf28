"""A small real Flask app for the end-to-end tests: pages, a form POST, a file upload, a streamed
response, JSON, redirects and a cookie session. Served with --python-home build/venv."""

import hashlib
import importlib.metadata
import os
import sys
import time

from flask import Flask, Response, jsonify, redirect, render_template_string, request, session, stream_with_context, url_for

FLASK_VERSION = importlib.metadata.version("flask")
app = Flask(__name__)
app.secret_key = "rwsgi-test-only-secret"
app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024

PAGE = """<!doctype html>
<title>{{ title }}</title>
<h1>{{ title }}</h1>
<p>Flask {{ flask_version }} on Python {{ python }}; prefix {{ request.script_root or '/' }}</p>
<form method="post" action="{{ url_for('form') }}">
  <input name="name"><input name="colour"><button>Send</button>
</form>
"""


@app.route("/")
def index():
    return render_template_string(PAGE, title="rwsgi flask test", flask_version=FLASK_VERSION,
                                  python=sys.version.split()[0])


@app.route("/info")
def info():
    return jsonify(prefix=sys.prefix, executable=sys.executable, script_root=request.script_root,
                   path=request.path, url=request.url, pid=os.getpid())


@app.route("/form", methods=["GET", "POST"])
def form():
    if request.method == "POST":
        return jsonify(name=request.form.get("name"), colour=request.form.get("colour"),
                       multi=request.form.getlist("multi"))
    return render_template_string(PAGE, title="form", flask_version=FLASK_VERSION,
                                  python=sys.version.split()[0])


@app.route("/upload", methods=["POST"])
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(filename=f.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                   mimetype=f.mimetype, note=request.form.get("note"))


@app.route("/stream")
def stream():
    n = int(request.args.get("n", 5))
    delay = float(request.args.get("delay", 0.2))

    @stream_with_context
    def generate():
        for i in range(n):
            if i:
                time.sleep(delay)
            yield f"line {i} {request.args.get('tag', '')}\n"
    return Response(generate(), mimetype="text/plain", headers={"X-Accel-Buffering": "no"})


@app.route("/redirect")
def go():
    return redirect(url_for("info"))


@app.route("/session/<value>")
def set_session(value):
    session["value"] = value
    return "stored"


@app.route("/session")
def get_session():
    return jsonify(value=session.get("value"))


@app.route("/json", methods=["POST"])
def echo_json():
    return jsonify(received=request.get_json())


@app.route("/error")
def error():
    raise RuntimeError("flask test error route")


application = app
