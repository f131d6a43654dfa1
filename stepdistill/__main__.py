from stepdistill.cli import app

app()
