"""Where sources come from: APDB, catalog files, alert packets."""
