"""Numbered SQL migrations applied in order by ``runtime.gateways.migrate``.

A package (not a bare folder) so the .sql files ship in the wheel.
"""
