#!/bin/sh
# Run once by the postgres image on an empty data directory: a role and a database per
# service, each role owning only its own database, with the passwords of the Secret
# postgres-passwords (the same ones as in each service's TIDEWAY_<SERVICE>__DATABASE_URL).
set -eu
for service in identity catalog basket inventory payment ordering notification reporting; do
  password=$(cat "/run/secrets/postgres/$service")
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v role="$service" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
done
