#!/usr/bin/env bash
# Writes the files the distributed overlay's secretGenerator reads, with fresh random
# passwords and a new Ed25519 signing key. A file that exists is kept, so running it again
# changes nothing; delete a file to rotate what it holds (docs/deploy.md).
#
#   deploy/k8s/overlays/distributed/secrets/generate.sh [DIR]   # default: beside this script
#
# Needs openssl. The database URLs name the in-cluster `postgres` Service; with a managed
# server, edit them in <service>.env (and the passwords in <service>-db-password to match
# the roles you created there).
set -euo pipefail
dir=${1:-$(dirname "$0")}
mkdir -p "$dir"
umask 077

services=(identity catalog basket inventory payment ordering notification reporting)
password() { openssl rand -hex 24; }

write_once() { # FILE COMMAND...: writes COMMAND's output to FILE unless FILE exists
  local file=$1; shift
  if [ -e "$file" ]; then return; fi
  "$@" > "$file.tmp" && mv "$file.tmp" "$file"
  echo "wrote $file"
}

if [ ! -e "$dir/identity-signing-key.pem" ]; then
  openssl genpkey -algorithm ed25519 -out "$dir/identity-signing-key.pem"
  echo "wrote $dir/identity-signing-key.pem"
fi
write_once "$dir/postgres-password" password
for service in "${services[@]}"; do
  write_once "$dir/$service-db-password" password
  upper=$(printf '%s' "$service" | tr '[:lower:]' '[:upper:]')
  write_once "$dir/$service.env" printf 'TIDEWAY_%s__DATABASE_URL=postgres://%s:%s@postgres:5432/%s\n' \
    "$upper" "$service" "$(cat "$dir/$service-db-password")" "$service"
done
write_once "$dir/redis.conf" printf 'requirepass %s\nsave ""\nappendonly no\nport 6379\ndir /data\n' "$(password)"
