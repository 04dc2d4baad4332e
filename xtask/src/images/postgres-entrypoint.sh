#!/bin/sh
# The upstream postgres image's contract, for the image built from Debian's package: a new data
# directory is initialised with POSTGRES_USER (a password login) and POSTGRES_DB, then the
# server runs in the foreground. The password goes through stdin, never argv.
set -eu
: "${PGDATA:?PGDATA must be set}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set (the aether-postgres Secret)}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
case "$POSTGRES_PASSWORD$user$db" in
  *\'* | *\"* | *\\*)
    echo "POSTGRES_PASSWORD, POSTGRES_USER and POSTGRES_DB must not contain quotes or backslashes" >&2
    exit 1 ;;
esac
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  # The bootstrap superuser is the OS user (single-user mode logs in as it); the application
  # user is created beside it with a SCRAM password.
  initdb --username=postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C -D "$PGDATA" >/dev/null
  printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  {
    if [ "$user" = postgres ]; then
      printf "ALTER ROLE postgres PASSWORD '%s';\n" "$POSTGRES_PASSWORD"
    else
      printf "CREATE ROLE \"%s\" LOGIN SUPERUSER PASSWORD '%s';\n" "$user" "$POSTGRES_PASSWORD"
    fi
    if [ "$db" != postgres ]; then
      printf 'CREATE DATABASE "%s" OWNER "%s";\n' "$db" "$user"
    fi
  } | postgres --single -D "$PGDATA" -c jit=off -c log_min_messages=warning postgres >/dev/null
  echo "initialised $PGDATA for $user/$db" >&2
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c jit=off
