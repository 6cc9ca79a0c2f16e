"""Ray Serve applications (the venue selector's HTTP endpoint)."""
