"""The `trainforge` command (entry point `trainforge.server.cli:app`). This module only wires the
commands, each kept in a module of its own:

    serve.py     serve: the whole service until a signal; first admin key on a keyless database
    demo.py      demo: the service on free ports plus a scripted REST session
    worker.py    worker: training workers without a server
    db.py        db upgrade
    backup_restore.py  backup, restore: the registry's database and artifacts, verified
    keys.py      keys create|list|revoke (directly on the database)
    audit.py     audit verify|list (directly on the database)
    models.py    models ...: RegistryService client
    jobs.py      jobs ...: TrainingService job client, with `watch`
    train.py     train: submit a job from a YAML template
    evaluate.py  evaluate: a local model on a local file, in this process
    deploy.py    deploy, deployments ...: DeployService client; chat: a local deployment's stable path
    common.py    consoles, options, settings, error printing, the gRPC client
    database.py  database access for keys, audit and worker
    tables.py    rich renderers

Output is rich tables, or JSON with proto field names under `--json`; errors are one message (and
each field violation) with exit status 1 (2 for a bad command line or settings), never a traceback.
"""

from __future__ import annotations

import os

# grpc's fork handlers log an INFO line ("Other threads are currently calling into gRPC, skipping
# fork() handlers") each time the service forks pg_ctl, Envoy or a training job. Every child we
# fork execs at once and never touches gRPC, so the handlers are not needed. Read when grpc is
# first imported: keep this above the imports.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import typer  # noqa: E402

from trainforge.server.cli import (  # noqa: E402
    audit,
    backup_restore,
    db,
    demo,
    deploy,
    evaluate,
    jobs,
    keys,
    models,
    serve,
    train,
    worker,
)

# Locals stay out of tracebacks: they would print DSNs with passwords.
app = typer.Typer(name="trainforge", help="Self-hosted LLM training system: service, workers, jobs, model registry, API keys and audit.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)

app.command()(serve.serve)
app.command()(demo.demo)
app.command()(worker.worker)
app.command()(train.train)
app.command()(evaluate.evaluate)
app.command()(deploy.deploy)
app.command()(deploy.chat)
app.add_typer(deploy.app, name="deployments")
app.command()(backup_restore.backup)
app.command()(backup_restore.restore)
app.add_typer(db.app, name="db")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(models.app, name="models")
app.add_typer(jobs.app, name="jobs")

__all__ = ["app"]
