"""The curator's web app: flagged sheets and label drafts reviewed in a browser, decisions kept.

`store` keeps every decision and field edit (SQLite, append-only), `queue` reads a screen or
transcription job into what a reviewer goes through, `dzi` cuts a sheet into Deep Zoom tiles on
demand, `server` serves the pages and the API, `learn` turns decisions into training labels and
orders sheets by what a decision would teach.
"""
