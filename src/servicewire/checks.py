"""Django system checks for unsafe or broken servicewire settings."""
