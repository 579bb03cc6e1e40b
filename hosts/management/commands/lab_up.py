"""Build the local lab (seed chain, testvm, twodisk) and register it as hypervisor "local"."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hosts.lab import build_lab
from hosts.lab.domains import SYSTEM_URI, VirshError
from hosts.models import Hypervisor


class Command(BaseCommand):
    help = "Build the local libvirt lab under BLOCKMIG_LAB_DIR and register it in the inventory."

    def handle(self, *args, **options):
        lab_dir = Path(settings.BLOCKMIG_LAB_DIR)
        self.stdout.write(f"==> building the lab in {lab_dir} (keeps what is already there)")
        try:
            info = build_lab(lab_dir, uri=SYSTEM_URI)
        except (RuntimeError, VirshError, OSError) as error:
            raise CommandError(f"lab build failed: {error}\nIs libvirtd up? Try `make libvirtd`.") from error

        self.stdout.write(f"==> seed chain: {info.seed.snap2} <- {info.seed.snap1.name} <- {info.seed.base.name}")
        self.stdout.write(f"==> guests run under {'KVM' if info.virt_type == 'kvm' else 'TCG (type=qemu)'}")
        self.stdout.write(
            f"==> domains running: {info.testvm} (serial {info.testvm_serial}), {info.twodisk} (serial {info.twodisk_serial})"
        )

        # get_or_create: a re-run must not undo what an admin changed on the host since.
        hypervisor, created = Hypervisor.objects.get_or_create(
            name="local",
            defaults={"uri": info.uri, "allowed_roots": [str(info.backups)]},
        )
        if created:
            self.stdout.write(f"==> registered hypervisor 'local' ({hypervisor.uri}, destinations under {info.backups})")
        else:
            self.stdout.write(f"==> hypervisor 'local' already registered ({hypervisor.uri}); left as it is")
