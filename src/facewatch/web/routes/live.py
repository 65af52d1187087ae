"""Routes: live (placeholder until its feature lands)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
