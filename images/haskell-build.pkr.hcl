# The Haskell build image of profile.vm-haskell-build: Debian 12 (bookworm)
# installed unattended from the netinst ISO (preseed), with GHC and cabal
# from Debian, an SSH server, and the key sandboxer logs in with.
#
# Do not run packer on this file by hand: `scripts/vm-image packer-build`
# renders its inputs (the var file and http/preseed.cfg, with a one-time
# build password) from the profile and runs `packer build`;
# `scripts/vm-image packer-validate` runs `packer validate` (the tests do).
# See docs/runbooks/vm-haskell-build.md. Written for Packer 1.6.6 (Debian's
# `packer` package), whose qemu builder is built in.

variable "iso_url" {
  type        = string
  description = "The Debian 12 amd64 netinst ISO (URL or local path)."
}

variable "iso_checksum" {
  type        = string
  description = "Its checksum, e.g. sha256:HEX or file:URL-of-SHA256SUMS."
}

variable "output_directory" {
  type        = string
  description = "Where the image is written (must not exist)."
}

variable "vm_name" {
  type        = string
  default     = "haskell-build.qcow2"
  description = "The image file name: the profile's `image`."
}

variable "http_directory" {
  type        = string
  description = "The rendered folder holding preseed.cfg."
}

variable "build_password" {
  type        = string
  sensitive   = true
  description = "Root's password during the build only; locked at the end."
}

variable "authorized_key" {
  type        = string
  description = "The public key root accepts in the image (matches the profile's `ssh_key`)."
}

variable "accelerator" {
  type    = string
  default = "tcg"
}

variable "memory" {
  type    = number
  default = 2048
}

variable "cpus" {
  type    = number
  default = 2
}

variable "disk_size" {
  type    = string
  default = "20G"
}

variable "headless" {
  type    = bool
  default = true
}

variable "haskell_packages" {
  type        = list(string)
  default     = ["ghc", "cabal-install", "libghc-zlib-dev", "zlib1g-dev", "build-essential", "git", "curl", "ca-certificates", "pkg-config"]
  description = "Debian packages the provisioner installs."
}

source "qemu" "haskell-build" {
  iso_url          = var.iso_url
  iso_checksum     = var.iso_checksum
  output_directory = var.output_directory
  vm_name          = var.vm_name
  format           = "qcow2"
  accelerator      = var.accelerator
  memory           = var.memory
  cpus             = var.cpus
  disk_size        = var.disk_size
  disk_interface   = "virtio"
  net_device       = "e1000"
  headless         = var.headless
  http_directory   = var.http_directory
  boot_wait        = "5s"
  boot_command = [
    "<esc><wait>",
    "auto preseed/url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/preseed.cfg ",
    "debian-installer=en_US.UTF-8 locale=en_US.UTF-8 keymap=us ",
    "netcfg/get_hostname=haskell-build netcfg/get_domain=localdomain ",
    "fb=false debconf/frontend=noninteractive console-setup/ask_detect=false ",
    "<enter>"
  ]
  ssh_username     = "root"
  ssh_password     = var.build_password
  ssh_timeout      = "3h"
  shutdown_command = "shutdown -P now"
}

build {
  sources = ["source.qemu.haskell-build"]

  provisioner "shell" {
    environment_vars = [
      "DEBIAN_FRONTEND=noninteractive",
      "HASKELL_PACKAGES=${join(" ", var.haskell_packages)}",
      "AUTHORIZED_KEY=${var.authorized_key}",
    ]
    inline = [
      "set -eux",
      "apt-get update",
      "apt-get install -y --no-install-recommends $HASKELL_PACKAGES",
      "ghc --version && cabal --version",
      "install -d -m 0700 /root/.ssh",
      "printf '%s\\n' \"$AUTHORIZED_KEY\" > /root/.ssh/authorized_keys",
      "chmod 0600 /root/.ssh/authorized_keys",
      "rm -f /etc/ssh/sshd_config.d/00-build.conf",
      "printf 'PermitRootLogin prohibit-password\\nPasswordAuthentication no\\n' > /etc/ssh/sshd_config.d/sandboxer.conf",
      "passwd -l root",
      "apt-get clean",
      "rm -f /etc/ssh/ssh_host_*",
      "printf '[Unit]\\nDescription=SSH host keys\\nBefore=ssh.service\\nConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\\n[Service]\\nType=oneshot\\nExecStart=/usr/bin/ssh-keygen -A\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/ssh-hostkeys.service",
      "systemctl enable ssh-hostkeys.service",
      "truncate -s 0 /etc/machine-id",
    ]
  }
}
