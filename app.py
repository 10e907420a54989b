"""llava-app: chat with your photos. Config, then create_app, then build_demo, then launch."""

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
    from llava_app.application import create_app
    from llava_app.web.auth import load_users

    try:
        load_users(config.auth, config.auth_file)  # a bad user list fails before the model loads
        app = create_app(config)
    except UserError as exc:  # a model that cannot be found, a bad user list: one clear line
        sys.exit(f"error: {exc}")

    from llava_app.web.page.main import build_demo
    from llava_app.web.server import launch

    launch(app, build_demo(app))


if __name__ == "__main__":
    main()
