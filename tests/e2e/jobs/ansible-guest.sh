# A guest that Ansible drives over SSH (test_ansible.py), run as the harness job on every boot.
# The job only makes the guest reachable: networking from QEMU's user network (DHCP), the run's
# public key for root, sshd; then it waits. Ansible reboots the guest itself (that ends this
# boot's job) and, when it is done, creates /var/lib/e2e/finished: the job ends, the guest powers off.
. "$HARNESS_FILES/lib.sh"
mkdir -p /etc/systemd/network /root/.ssh /var/lib/e2e
cat >/etc/systemd/network/10-e2e.network <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
NET
install -m 0600 "$HARNESS_FILES/id_e2e.pub" /root/.ssh/authorized_keys
chmod 0700 /root/.ssh
ev networkd systemctl enable --now systemd-networkd
ev sshd systemctl enable --now ssh
ev networkctl networkctl status --no-pager
ev cmdline cat /proc/cmdline
for _ in $(seq 3600); do
    [ -e /var/lib/e2e/finished ] && exit 0
    sleep 1
done
echo "TIMEOUT: Ansible never finished"
exit 3
