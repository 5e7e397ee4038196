"""The reference Session Recording Server (SRS)."""
