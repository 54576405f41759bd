"""Where pixels come from: FITS path templates, a Butler, alert stamps."""
