#!/bin/sh
# Installs troved as a systemd service on Raspberry Pi OS (or any systemd Debian).
#
#   sudo sh install.sh [TROVED_BINARY]
#
# Looks for the binary (built by `just cross` for this board's target) as the argument, next
# to this script, or in /boot/firmware/trove/; the unit next to this script (systemd/ in the
# repository, or beside it on the boot partition). Creates the `troved` user and
# /var/lib/trove, writes /etc/trove/troved.toml unless it exists, installs and starts the
# service. A card provisioned with `trove-controller enroll --boot` joins the fleet on this
# first start; otherwise give it a token: `troved --join TOKEN` once, or `join = ...` in the
# config. Running it again upgrades the binary and the unit and keeps the config and data.
set -eu

DATA=/var/lib/trove
CONFIG_DIR=/etc/trove
BIN=/usr/local/bin/troved
UNIT=/etc/systemd/system/troved.service
BOOT=/boot/firmware/trove

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "install.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sudo sh $0)"

binary=${1:-}
if [ -z "$binary" ]; then
  for candidate in "$here/troved" "$BOOT/troved"; do
    if [ -f "$candidate" ]; then binary=$candidate; break; fi
  done
fi
[ -n "$binary" ] && [ -f "$binary" ] || die "no troved binary: pass its path (see README, 'Install on a Raspberry Pi')"

unit=
for candidate in "$here/systemd/troved.service" "$here/troved.service" "$BOOT/troved.service"; do
  if [ -f "$candidate" ]; then unit=$candidate; break; fi
done
[ -n "$unit" ] || die "troved.service not found next to $0"

# A binary for the wrong board (armv7 on a 64-bit OS works; aarch64 on a 32-bit one does not)
# fails here rather than in a restart loop.
chmod 0755 "$binary" 2>/dev/null || true
version=$("$binary" --version) || die "$binary does not run on this board ($(uname -m)); pick the build for its target"
echo "installing $version from $binary"

if ! id troved >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin troved
fi
# Also right when a data disk is mounted there: the service may write only this directory.
install -d -o troved -g troved -m 0750 "$DATA"
install -d -m 0755 "$CONFIG_DIR"

# Stop before replacing the binary, so an upgrade never runs half-copied code.
if systemctl is-active --quiet troved 2>/dev/null; then systemctl stop troved; fi
install -m 0755 "$binary" "$BIN.new" && mv -f "$BIN.new" "$BIN"
install -m 0644 "$unit" "$UNIT"

if [ ! -e "$CONFIG_DIR/troved.toml" ]; then
  # The board's settings (capacity, disk reserve, ...) come from the provisioned card and are
  # kept in $DATA/provisioned.toml; what is set here overrides them.
  cat >"$CONFIG_DIR/troved.toml" <<CONF
# troved settings (see \`troved --help\`); these override the provisioned board profile.
data = "$DATA"
listen = "0.0.0.0:7070"
firstboot = "$BOOT"
CONF
  chmod 0644 "$CONFIG_DIR/troved.toml"
fi

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable troved
  systemctl restart troved
  echo "troved is running: systemctl status troved; journalctl -u troved"
else
  # In a chroot or an image being prepared: start it on the next boot.
  systemctl enable troved 2>/dev/null || ln -sf "$UNIT" /etc/systemd/system/multi-user.target.wants/troved.service
  echo "troved will start on the next boot"
fi
