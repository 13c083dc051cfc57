#!/usr/bin/env bash
# Prints the URL a git remote means, for the image's
# org.opencontainers.image.source annotation (which must be a URL):
#   https://host/o/r.git, ssh://..., git://..., file://...  as they are
#   /path/to/repo.git        -> file:///path/to/repo.git
#   git@host:owner/repo.git  -> ssh://git@host/owner/repo.git
#   host:owner/repo.git      -> ssh://host/owner/repo.git
#   relative/path            -> file://<absolute path>
set -euo pipefail
[ $# -eq 1 ] && [ -n "$1" ] || { echo "source-url: takes one remote (got $#)" >&2; exit 2; }
r=$1
case "$r" in
  *://*) echo "$r" ;;
  /*) echo "file://$r" ;;
  *:*) h=${r%%:*}; p=${r#*:}; echo "ssh://$h/${p#/}" ;;
  *) d=$(cd "$r" 2>/dev/null && pwd) || { echo "source-url: $r is neither a URL nor a directory" >&2; exit 1; }; echo "file://$d" ;;
esac
