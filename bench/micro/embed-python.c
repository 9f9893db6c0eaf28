// bench/micro/embed-python.c: a `python` built on another copy of Debian's CPython 3.11 than
// /usr/bin/python3.11 (static, non-PIE, profile-guided and link-time optimised):
//
// - linked to libpython3.11.so.1.0, the position-independent library without profile-guided
//   optimisation that nginx and httpd load with our modules (and with mod_wsgi);
// - linked with libpython3.11.a whole, non-PIE, as rwsgi-worker is (crates/pyhost/build.rs):
//   the profile-optimised objects without the executable's link-time optimisation.
//
// Running one script under each shows what the interpreter build alone costs, with no server in
// the way. bench/floor builds both into build/floor/ and uses them; by hand:
//
//   cc -O2 $(python3-config --includes) -o python-shared bench/micro/embed-python.c -lpython3.11
#include <Python.h>

int main(int argc, char **argv) { return Py_BytesMain(argc, argv); }
