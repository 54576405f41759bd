"""Pictures: plain and annotated cutout PNGs."""
