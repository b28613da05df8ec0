"""colourbatch: batch colourization of black-and-white films, photos and pages.

Kept import-free on purpose so `colourbatch --help` answers instantly; torch,
OpenCV and PyAV are imported by the commands that need them.
"""
__version__ = "0.1.0"
