#!/usr/bin/env python3
"""Django's command-line utility for the test project (not used by the tests themselves)."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testsite.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
