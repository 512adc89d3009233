"""Workers sharing one database (docs/cluster.md): this daemon's worker row and its worker
on the job queue (procrastinate's, PostgreSQL only)."""
