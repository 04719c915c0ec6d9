"""
Real-browser tests: headless Chromium and Firefox ESR through the proxy.
"""
