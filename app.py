"""llava-app: chat with your photos. Config, then backend, then build_demo, then launch."""

from __future__ import annotations

import logging
import os
import sys


def main(argv: list[str] | None = None) -> None:
    from llava_app.config import parse_config
    from llava_app.errors import UserError

    logging.basicConfig(level=os.environ.get("LLAVA_APP_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_config(argv)

    from llava_app.engine import make_app_backend
    from llava_app.storage.images import ImageStore

    store = ImageStore(os.path.join(config.data_dir, "images"))
    try:
        from llava_app.web.auth import load_users

        load_users(config.auth, config.auth_file)  # a bad user list fails before the model loads
        backend = make_app_backend(config, store)
    except UserError as exc:  # a model that cannot be found, a bad user list: one clear line
        sys.exit(f"error: {exc}")

    from llava_app.web.page import build_demo, launch_kwargs, queue_kwargs

    demo = build_demo(backend, config, store)
    demo.queue(**queue_kwargs(config)).launch(**launch_kwargs(config, demo))


if __name__ == "__main__":
    main()
