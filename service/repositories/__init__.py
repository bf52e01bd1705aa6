"""Every database read and write of the service goes through these modules; routes stay thin."""
