"""Test material made from the held-out data: card videos, spoken-digit recordings, pictures."""
