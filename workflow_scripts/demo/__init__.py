"""Demo-only code: the generated data world (data.py) and the tiny base model built and trained
here (model.py). Nothing outside the demo path imports it."""
