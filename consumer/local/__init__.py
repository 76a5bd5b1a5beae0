"""The local part: the native stack manager, the database set-up (`db init`), the platform simulator and the demo."""
