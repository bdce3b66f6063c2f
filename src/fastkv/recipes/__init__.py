"""Recipes on the v2 API, each for the blocking `Client` and the asyncio `AsyncClient`."""
