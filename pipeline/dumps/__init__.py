"""Bootstrapping the ledger from Wikimedia's SQL dumps instead of walking the API (docs/dumps.md).

    source     where a dump run is (a directory, a run URL, `latest`) and what it holds
    download   resumable, verified, polite downloads of a run's files
    mysqldump  the streaming parser: mysqldump's INSERT lines to PostgreSQL COPY text (pure)
    loader     COPY into staging tables, then set-based SQL to pages, files and usages
    bootstrap  the whole crawl from dumps: check, load, imageinfo, swap in, change-feed cursor
"""
