"""The one client layer every command uses. Clients speak protocols and hold no business rules."""
