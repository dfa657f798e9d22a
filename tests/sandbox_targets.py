"""Functions the sandbox tests run in the child process (importable there via the project root)."""

import os
import time


def echo(value):
    return {"echo": value}


def abort():
    os.abort()


def sleep(seconds):
    time.sleep(seconds)
    return {}


def allocate(megabytes):
    block = bytearray(megabytes << 20)
    return {"len": len(block)}


def exit_hard(code):
    os._exit(code)
