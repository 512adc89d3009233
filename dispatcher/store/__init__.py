"""The store: tables and schemas (models) and the database behind them."""
