"""Reservations and payments: POST /api/reservar through a Chain of Responsibility and an orchestrated saga."""
