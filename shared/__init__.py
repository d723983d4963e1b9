"""What the app server, the redirector addon and the test-suite client share."""
