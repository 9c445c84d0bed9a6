"""What every workflow shares: message base classes, names, errors, metrics, notifications."""
