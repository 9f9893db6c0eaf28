import hashlib
import os
import sys
import time

import django
from django.db import connection
from django.http import HttpResponseNotAllowed, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse


def index(request):
    return render(request, "index.html", {"django_version": django.get_version()})


def info(request):
    return JsonResponse({
        "script_name": request.META.get("SCRIPT_NAME"),
        "path": request.path,
        "path_info": request.path_info,
        "absolute": request.build_absolute_uri(),
        "reverse_form": reverse("form"),
        "prefix": sys.prefix,
        "pid": os.getpid(),
    })


def form(request):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    return JsonResponse({"name": request.POST.get("name"), "colour": request.POST.get("colour")})


def upload(request):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    f = request.FILES["file"]
    digest = hashlib.sha256()
    size = 0
    for chunk in f.chunks():
        digest.update(chunk)
        size += len(chunk)
    return JsonResponse({"filename": f.name, "size": size, "sha256": digest.hexdigest(),
                         "note": request.POST.get("note")})


def stream(request):
    n = int(request.GET.get("n", 5))
    delay = float(request.GET.get("delay", 0.2))

    def generate():
        for i in range(n):
            if i:
                time.sleep(delay)
            yield f"line {i}\n"
    response = StreamingHttpResponse(generate(), content_type="text/plain")
    response["X-Accel-Buffering"] = "no"
    return response


def db(request):
    os.makedirs(os.path.dirname(connection.settings_dict["NAME"]), exist_ok=True)
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY, at REAL)")
        cur.execute("INSERT INTO hits (at) VALUES (%s)", [time.time()])
        cur.execute("SELECT COUNT(*) FROM hits")
        (count,) = cur.fetchone()
    return JsonResponse({"hits": count})


def error(request):
    raise RuntimeError("django test error view")
