"""engines/mocker."""
