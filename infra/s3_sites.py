"""The `aws` provider: an S3 static website (bucket, website config, public-read policy, upload)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from infra.sites import SiteStore, content_type, manifest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# us-east-1 list prices: storage per GB-month, GET per 1,000 requests, transfer out per GB.
S3_STORAGE_PER_GB = Decimal("0.023")
S3_GET_PER_1000 = Decimal("0.0004")
S3_TRANSFER_PER_GB = Decimal("0.09")
ASSUMED_MONTHLY_GETS = 100_000
ASSUMED_PAGE_VIEWS = 10_000


def bucket_name(environment_id: str, configured: str | None) -> str:
    return configured or f"forgeline-site-{environment_id}"[:63]


def estimated_monthly_cost(total_bytes: int) -> Decimal:
    """A small static site: storage + an assumed 100k GETs + 10k page views of transfer."""
    gb = Decimal(total_bytes) / Decimal(1024**3)
    storage = gb * S3_STORAGE_PER_GB
    requests = Decimal(ASSUMED_MONTHLY_GETS) / 1000 * S3_GET_PER_1000
    transfer = gb * ASSUMED_PAGE_VIEWS * S3_TRANSFER_PER_GB
    return max(Decimal("0.01"), (storage + requests + transfer)).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP
    )


@dataclass(frozen=True)
class S3Website:
    bucket: str
    region: str
    url: str
    arn: str
    objects: int
    total_bytes: int
    monthly_cost: Decimal

    def resource_config(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "website_url": self.url,
            "objects": self.objects,
            "bytes": self.total_bytes,
            "index_document": "index.html",
        }


def website_url(bucket: str, region: str, endpoint_url: str | None) -> str:
    if endpoint_url:
        return f"{endpoint_url.rstrip('/')}/{bucket}/index.html"
    return f"http://{bucket}.s3-website-{region}.amazonaws.com/"


class S3WebsitePublisher:
    def __init__(self, s3: S3Client, *, endpoint_url: str | None = None) -> None:
        self._s3 = s3
        self._endpoint_url = endpoint_url

    def ensure_bucket(self, bucket: str, region: str) -> None:
        try:
            if region == "us-east-1":
                self._s3.create_bucket(Bucket=bucket)
            else:
                self._s3.create_bucket(
                    Bucket=bucket,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise
        self._s3.put_bucket_website(
            Bucket=bucket,
            WebsiteConfiguration={
                "IndexDocument": {"Suffix": "index.html"},
                "ErrorDocument": {"Key": "404.html"},
            },
        )
        # Some S3-compatible stores have no public access block API.
        with contextlib.suppress(ClientError):
            self._s3.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": False,
                    "IgnorePublicAcls": False,
                    "BlockPublicPolicy": False,
                    "RestrictPublicBuckets": False,
                },
            )
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "PublicReadForWebsite",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{bucket}/*",
                }
            ],
        }
        self._s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))

    def publish(self, store: SiteStore, prefix: str, bucket: str, region: str) -> S3Website:
        """Upload the stored site, then delete objects the new site no longer has."""
        self.ensure_bucket(bucket, region)
        files = manifest(store, prefix)
        total = 0
        for relative in files:
            body = store.get_bytes(f"{prefix}/{relative}")
            total += len(body)
            self._s3.put_object(
                Bucket=bucket, Key=relative, Body=body, ContentType=content_type(relative)
            )
        keep = set(files)
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            stale = [{"Key": o["Key"]} for o in page.get("Contents", []) if o["Key"] not in keep]
            if stale:
                self._s3.delete_objects(Bucket=bucket, Delete={"Objects": stale})  # type: ignore[typeddict-item]
        return S3Website(
            bucket=bucket,
            region=region,
            url=website_url(bucket, region, self._endpoint_url),
            arn=f"arn:aws:s3:::{bucket}",
            objects=len(files),
            total_bytes=total,
            monthly_cost=estimated_monthly_cost(total),
        )

    def probe(self, bucket: str) -> tuple[bool, str | None]:
        """Website configured and index.html readable (the S3 website endpoint is not reachable
        from a sandbox, so the check goes through the API)."""
        try:
            self._s3.get_bucket_website(Bucket=bucket)
            self._s3.head_object(Bucket=bucket, Key="index.html")
        except ClientError as exc:
            return False, str(exc.response.get("Error", {}).get("Code", exc))
        return True, None

    def delete_site(self, bucket: str) -> None:
        try:
            paginator = self._s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self._s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})  # type: ignore[typeddict-item]
            self._s3.delete_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
                raise
