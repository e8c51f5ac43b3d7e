"""Browser assets: the JavaScript client and the dev demo page, and their HTTP routes."""
