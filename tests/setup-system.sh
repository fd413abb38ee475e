#!/bin/sh
# Install the Debian packages the test suite needs, when missing: dockerd (docker.io), a
# static busybox (busybox-static) to build the test image from, sshd (openssh-server)
# for the ssh-node tests, headless Chromium (chromium) for the report's browser test, and
# a single-node Slurm cluster's daemons (slurmctld, slurmd, slurmdbd with munge and
# MariaDB for sacct) for the Slurm tests. Does nothing when they are present; needs root
# to install. `make test` calls it; the tests themselves install nothing.
set -eu

missing=""
command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ] || missing="$missing docker.io"
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" \
    || missing="$missing busybox-static"
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -x /usr/sbin/slurmctld ] || missing="$missing slurmctld"
[ -x /usr/sbin/slurmd ] || missing="$missing slurmd"
[ -x /usr/sbin/slurmdbd ] || missing="$missing slurmdbd"
command -v sbatch >/dev/null 2>&1 || missing="$missing slurm-client"
[ -x /usr/sbin/munged ] || missing="$missing munge"
[ -x /usr/sbin/mariadbd ] || missing="$missing mariadb-server-core"

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-system.sh: missing Debian packages:$missing; run \`sudo $0\`" \
         "(the Docker and Slurm tests will be skipped until then)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-system.sh: missing$missing and no apt-get here; install them by hand" >&2
    exit 0
fi
echo "setup-system.sh: installing$missing" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
