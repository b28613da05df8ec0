"""The trained weights shipped with colourbatch, installed as package data.

In the repository this folder is `weights/`; installed, it is the package
`colourbatch.weights`, so a fresh install (editable or a wheel) colours with
no download. `checkpoint.shipped_weights(name)` finds a file here.
"""
