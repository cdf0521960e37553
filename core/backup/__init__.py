"""Registry backups: a consistent pg_dump of the database plus the content-addressed blobs it
references, and their restore into an empty data directory.

    postgres_tools.py  pg_dump / pg_restore of the system PostgreSQL, matched to the server
    archive.py         write_backup / restore_backup and the manifest
    schedule.py        the periodic backups `trainforge serve` takes (backup_interval_hours)
"""
