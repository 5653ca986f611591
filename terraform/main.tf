resource "digitalocean_project" "depthbook" {
  name        = var.name
  description = "Binance order book collection (depthbook)"
  purpose     = "Service or API"
  environment = "Production"
}

resource "digitalocean_ssh_key" "admin" {
  name       = "${var.name}-admin"
  public_key = var.ssh_public_key
}

resource "random_password" "api_db" {
  length  = 32
  special = false
}

resource "random_password" "grafana_db" {
  length  = 32
  special = false
}

resource "random_password" "grafana_admin" {
  length  = 24
  special = false
}

resource "random_password" "api_token" {
  length  = 48
  special = false
}

locals {
  self_hosted = var.database == "self-hosted"
  # 3 hot days of 200 + 200 compressed (≈ 170 GB with the newest uncompressed hours), plus 30
  # days of Parquet daily files (≈ 402 GB) when no bucket holds them.
  volume_gb = coalesce(var.db_volume_gb, var.daily_bucket == "" ? 650 : 250)
}

resource "random_password" "db" {
  length  = 32
  special = false
}

# The self-hosted database's disk: Docker's data directory (every volume) lives on it.
resource "digitalocean_volume" "data" {
  count                   = local.self_hosted ? 1 : 0
  name                    = "${var.name}-data"
  region                  = var.region
  size                    = local.volume_gb
  initial_filesystem_type = "ext4"
  description             = "depthbook: TimescaleDB, spool, daily files, backups"
}

resource "digitalocean_database_cluster" "pg" {
  count      = local.self_hosted ? 0 : 1
  name       = "${var.name}-pg"
  engine     = "pg"
  version    = var.db_version
  size       = var.db_size
  region     = var.region
  node_count = 1
}

resource "digitalocean_database_db" "depthbook" {
  count      = local.self_hosted ? 0 : 1
  cluster_id = digitalocean_database_cluster.pg[0].id
  name       = "depthbook"
}

# The daily research set's copy, when asked for.
resource "digitalocean_spaces_bucket" "daily" {
  count  = var.daily_bucket == "" ? 0 : 1
  name   = var.daily_bucket
  region = var.region
  acl    = "private"
}

resource "digitalocean_droplet" "app" {
  name       = "${var.name}-app"
  image      = "ubuntu-24-04-x64"
  size       = var.droplet_size
  region     = var.region
  ssh_keys   = [digitalocean_ssh_key.admin.id]
  volume_ids = digitalocean_volume.data[*].id
  monitoring = true
  user_data = templatefile("${path.module}/cloud-init.yaml", {
    repo_url               = var.repo_url
    repo_ref               = var.repo_ref
    ingest_top             = var.ingest_top
    self_hosted            = local.self_hosted
    data_volume            = local.self_hosted ? "${var.name}-data" : ""
    hot_days               = var.hot_days
    db_host                = local.self_hosted ? "timescaledb" : digitalocean_database_cluster.pg[0].private_host
    db_port                = local.self_hosted ? 5432 : digitalocean_database_cluster.pg[0].port
    db_user                = local.self_hosted ? "depthbook" : digitalocean_database_cluster.pg[0].user
    db_password            = local.self_hosted ? random_password.db.result : digitalocean_database_cluster.pg[0].password
    db_name                = local.self_hosted ? "depthbook" : digitalocean_database_db.depthbook[0].name
    api_db_password        = random_password.api_db.result
    grafana_db_password    = random_password.grafana_db.result
    grafana_admin_password = random_password.grafana_admin.result
    api_token              = random_password.api_token.result
    domain                 = var.domain
    db_disk_gb             = local.self_hosted ? 0 : var.db_disk_gb
    daily_bucket           = var.daily_bucket == "" ? "" : "s3://${var.daily_bucket}/depthbook"
    daily_bucket_endpoint  = var.daily_bucket == "" ? "" : "https://${var.region}.digitaloceanspaces.com"
    daily_bucket_region    = var.region
    spaces_access_id       = var.spaces_access_id
    spaces_secret_key      = var.spaces_secret_key
    shards                 = local.shards
    instances              = local.collectors
    standby                = var.standby
    collector_name         = var.region
  })
}

locals {
  # Every collector: the app droplet's and one per collector region, sharing `shards` leases
  # (0: the app droplet's collector collects every symbol, without leases).
  collectors = length(var.collector_regions) + 1
  shards     = length(var.collector_regions) == 0 ? 0 : max(var.shards, local.collectors)
}

# Extra collectors in other regions: ingest only, against the managed database's public
# address over TLS, admitted by its firewall.
resource "digitalocean_droplet" "collector" {
  count      = length(var.collector_regions)
  name       = "${var.name}-collector-${var.collector_regions[count.index]}-${count.index + 1}"
  image      = "ubuntu-24-04-x64"
  size       = var.collector_size
  region     = var.collector_regions[count.index]
  ssh_keys   = [digitalocean_ssh_key.admin.id]
  monitoring = true
  user_data = templatefile("${path.module}/collector-init.yaml", {
    repo_url               = var.repo_url
    repo_ref               = var.repo_ref
    ingest_top             = var.ingest_top
    database_url           = local.self_hosted ? "" : "postgres://${digitalocean_database_cluster.pg[0].user}:${digitalocean_database_cluster.pg[0].password}@${digitalocean_database_cluster.pg[0].host}:${digitalocean_database_cluster.pg[0].port}/${digitalocean_database_db.depthbook[0].name}?sslmode=require"
    api_db_password        = random_password.api_db.result
    grafana_db_password    = random_password.grafana_db.result
    grafana_admin_password = random_password.grafana_admin.result
    api_token              = random_password.api_token.result
    shards                 = local.shards
    instances              = local.collectors
    standby                = var.standby
    collector_name         = "${var.collector_regions[count.index]}-${count.index + 1}"
  })
  lifecycle {
    precondition {
      condition     = !local.self_hosted
      error_message = "collector_regions needs database = managed: collectors in other regions reach the database over TLS, which the self-hosted container does not offer."
    }
  }
}

# The database admits the droplet only.
resource "digitalocean_database_firewall" "pg" {
  count      = local.self_hosted ? 0 : 1
  cluster_id = digitalocean_database_cluster.pg[0].id
  rule {
    type  = "droplet"
    value = digitalocean_droplet.app.id
  }
  dynamic "rule" {
    for_each = digitalocean_droplet.collector[*].id
    content {
      type  = "droplet"
      value = rule.value
    }
  }
}

locals {
  # Let's Encrypt validates a domain from anywhere; without one, only the allowed addresses.
  https_sources = var.domain == "" ? var.allowed_cidrs : ["0.0.0.0/0", "::/0"]
  public_host   = var.domain == "" ? digitalocean_droplet.app.ipv4_address : var.domain
}

resource "digitalocean_record" "app" {
  count  = var.domain != "" && var.dns_zone != "" ? 1 : 0
  domain = var.dns_zone
  type   = "A"
  name   = trimsuffix(var.domain, ".${var.dns_zone}")
  value  = digitalocean_droplet.app.ipv4_address
  ttl    = 300
}

resource "digitalocean_firewall" "app" {
  name        = "${var.name}-app"
  droplet_ids = [digitalocean_droplet.app.id]

  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = var.admin_cidrs
  }
  # HTTPS only (caddy); port 80 redirects and answers Let's Encrypt's challenge.
  inbound_rule {
    protocol         = "tcp"
    port_range       = "80"
    source_addresses = local.https_sources
  }
  inbound_rule {
    protocol         = "tcp"
    port_range       = "443"
    source_addresses = local.https_sources
  }
  inbound_rule {
    protocol         = "udp"
    port_range       = "443"
    source_addresses = local.https_sources
  }
  outbound_rule {
    protocol              = "tcp"
    port_range            = "1-65535"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
  outbound_rule {
    protocol              = "udp"
    port_range            = "53"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
  outbound_rule {
    protocol              = "icmp"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
}

# Collectors take no inbound traffic but SSH.
resource "digitalocean_firewall" "collector" {
  count       = length(var.collector_regions) > 0 ? 1 : 0
  name        = "${var.name}-collectors"
  droplet_ids = digitalocean_droplet.collector[*].id

  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = var.admin_cidrs
  }
  outbound_rule {
    protocol              = "tcp"
    port_range            = "1-65535"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
  outbound_rule {
    protocol              = "udp"
    port_range            = "53"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
}

resource "digitalocean_project_resources" "depthbook" {
  project = digitalocean_project.depthbook.id
  resources = concat(
    [digitalocean_droplet.app.urn],
    digitalocean_droplet.collector[*].urn,
    digitalocean_volume.data[*].urn,
    digitalocean_database_cluster.pg[*].urn,
  )
}
