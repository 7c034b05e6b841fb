"""Sharding entry point: an image folder → webdataset tar shards (:mod:`lit_diffusion.datamodules.shard_writer`),
which ``data=webdataset`` reads locally (indexed: exact resume) or streams from any URL webdataset opens.

    python -m lit_diffusion.shard root=/data/ffhq out=/data/ffhq_shards [max_count=10000]
    python -m lit_diffusion.shard root=/data/imagenet/train out=/data/in_shards labels=true
    python -m lit_diffusion.run data=webdataset data.root=/data/in_shards data.captions=false data.labels=true ...
"""

from __future__ import annotations

from omegaconf import DictConfig

from lit_diffusion.cli import entry_point
from lit_diffusion.datamodules.shard_writer import write_shards


def shard(cfg: DictConfig) -> list[str]:
    shards = write_shards(cfg.root, cfg.out, labels=cfg.labels, max_count=cfg.max_count, max_size=cfg.max_size)
    print(f"wrote {len(shards)} shard(s) to {cfg.out}: {shards[0].name} … {shards[-1].name}\n"
          f"  python -m lit_diffusion.run data=webdataset data.root={cfg.out} data.captions=<true if .txt captions> "
          f"data.labels={str(cfg.labels).lower()}")
    return [str(path) for path in shards]


main = entry_point("shard")(shard)

if __name__ == "__main__":
    main()
