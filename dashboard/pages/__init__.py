"""Pages: one module per page family; views stay thin and call services and selectors."""
