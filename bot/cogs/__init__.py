"""Command groups of the bot."""
