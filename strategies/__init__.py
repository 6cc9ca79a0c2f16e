"""Strategies: one class per strategy, its parameter model beside it."""
