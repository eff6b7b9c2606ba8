"""Fake external services for the tests: real HTTP on loopback, never mocks.

`tests.fakes.providers.FakeProviders` fakes Google Calendar, Microsoft Graph and their token endpoints.
"""
