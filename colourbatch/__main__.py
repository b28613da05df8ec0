"""`python -m colourbatch ...` (and `torchrun -m colourbatch train ...`)."""
from .cli import main

main()
