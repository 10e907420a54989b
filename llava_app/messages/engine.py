"""What the model's side says: loading and switching models, the remote model server, memory, settings."""

TEXTS: dict[str, tuple[str, str]] = {
    # capabilities and memory
    "engine.no_images": ("This model takes no images; ask in words only.", "这个模型不接受图片；请只用文字提问。"),
    "engine.no_counting": ("This engine cannot count a prompt's tokens.", "这个引擎无法统计提示词的词元数。"),
    "engine.one_model": ("This server runs one model; it cannot load another.",
                         "这个服务器只运行一个模型，无法加载其他模型。"),
    "engine.out_of_memory": (
        "The model ran out of memory on this request. Try fewer images, a shorter answer (lower max new tokens) or a "
        "new chat. Your conversation is kept.",
        "模型处理这个请求时内存不足。请减少图片、缩短回答（降低最多生成的词元数）或开始新对话。对话已保留。"),
    # switching the model
    "switch.choose": ("Choose a model first.", "请先选择一个模型。"),
    "switch.not_offered": (
        "{name} is not one of the models this server offers. The operator can allow it with --allowed-models.",
        "{name} 不是这个服务器提供的模型。运营者可以用 --allowed-models 允许它。"),
    "switch.none_loaded": ("No model is loaded: the last model switch failed. Pick a model and load it.",
                           "没有加载任何模型：上一次切换模型失败了。请选择一个模型并加载。"),
    "switch.busy": ("Another model is being loaded. Wait for it to finish.", "正在加载另一个模型。请等它完成。"),
    "switch.failed_twice": (
        "Could not load {name} ({reason}), and reloading {previous} failed too. Pick a model and load it.",
        "无法加载 {name}（{reason}），重新加载 {previous} 也失败了。请选择一个模型并加载。"),
    "switch.failed": ("Could not load {name}: {reason} Still using {previous}.",
                      "无法加载 {name}：{reason}仍在使用 {previous}。"),
    "switch.failure": ("{kind}: {detail}", "{kind}：{detail}"),
    "progress.waiting_answers": ("Waiting for {count} answer(s) being written to finish",
                                 "等待正在生成的 {count} 个回答完成"),
    "progress.freeing": ("Freeing {name}", "正在释放 {name}"),
    "progress.loading": ("Loading {name}", "正在加载 {name}"),
    "progress.reloading": ("Could not load {name}; loading {previous} again",
                           "无法加载 {name}；正在重新加载 {previous}"),
    "progress.loaded": ("Loaded {name}", "已加载 {name}"),
    # models on this machine
    "model.folder_failed": (
        "Could not load the model from the folder {folder}: {kind}: {detail}. Check that it holds a transformers "
        "checkpoint (config.json, weights, processor files).",
        "无法从文件夹 {folder} 加载模型：{kind}: {detail}。请检查其中是否有 transformers 检查点（config.json、权重、"
        "处理器文件）。"),
    "model.not_found": (
        "Model {name!r} was not found in {tried}. Check the id (for example llava-hf/llava-interleave-qwen-0.5b-hf), "
        "download it where the Hub is reachable (huggingface-cli download ID), pass a local folder, or run offline "
        "with --model tiny-random.",
        "在{tried}中找不到模型 {name!r}。请检查模型 id（例如 llava-hf/llava-interleave-qwen-0.5b-hf），在能访问 Hub "
        "的地方下载（huggingface-cli download ID），传入本地文件夹，或用 --model tiny-random 离线运行。"),
    "model.tried_offline": ("the local Hugging Face cache (HF_HUB_OFFLINE is set)",
                            "本地 Hugging Face 缓存（已设置 HF_HUB_OFFLINE）"),
    "model.tried_unreachable": ("the local Hugging Face cache (the Hub is unreachable from here)",
                                "本地 Hugging Face 缓存（这里无法访问 Hub）"),
    "model.tried_both": ("the local Hugging Face cache and the Hugging Face Hub",
                         "本地 Hugging Face 缓存和 Hugging Face Hub"),
    "model.needs_torch": (
        "The local backend needs torch and transformers: pip install -r requirements.txt (or use --backend openai "
        "with a remote server, which needs neither).",
        "本地后端需要 torch 和 transformers：pip install -r requirements.txt（或者用 --backend openai 连接远程服务器"
        "，两者都不需要）。"),
    # the operator's settings (read at start-up)
    "config.backend": ("unknown backend {backend!r}; use local or openai",
                       "未知的后端 {backend!r}；请使用 local 或 openai"),
    "config.device_name": ("--device {device!r} is not a device name; use auto, cpu, cuda or cuda:N",
                           "--device {device!r} 不是设备名；请使用 auto、cpu、cuda 或 cuda:N"),
    "config.no_cuda": ("--device {device} was asked for, but no CUDA device is available; use --device cpu",
                       "指定了 --device {device}，但没有可用的 CUDA 设备；请使用 --device cpu"),
    "config.cuda_index": (
        "--device {device} was asked for, but this machine has {count} CUDA device(s) (cuda:0 to cuda:{last})",
        "指定了 --device {device}，但这台机器只有 {count} 个 CUDA 设备（cuda:0 到 cuda:{last}）"),
    "config.both_bits": ("choose one of --load-in-4bit and --load-in-8bit, not both",
                         "--load-in-4bit 和 --load-in-8bit 只能选一个"),
    "config.bits_cpu": ("--load-in-4bit/--load-in-8bit need a CUDA GPU (bitsandbytes); drop the flag on the CPU",
                        "--load-in-4bit/--load-in-8bit 需要 CUDA GPU（bitsandbytes）；在 CPU 上请去掉这个选项"),
    "config.bitsandbytes": (
        "--load-in-4bit/--load-in-8bit need bitsandbytes>={version} and {found}: pip install -r {requirements}",
        "--load-in-4bit/--load-in-8bit 需要 bitsandbytes>={version}，而{found}：pip install -r {requirements}"),
    "config.not_installed": ("it is not installed", "它没有安装"),
    "config.installed": ("{version} is installed", "安装的是 {version}"),
    # the remote model server (--backend openai)
    "remote.needs_openai": ("The openai backend needs the openai client: pip install openai",
                            "openai 后端需要 openai 客户端：pip install openai"),
    "remote.no_models": (
        "{url}/models was not found (HTTP 404). Is --base-url the API root, e.g. http://localhost:8000/v1?",
        "找不到 {url}/models（HTTP 404）。--base-url 是 API 的根地址吗，例如 http://localhost:8000/v1？"),
    "remote.not_served": (
        "The server at {url} does not serve {model!r}; it serves {served}. Pass one of them with --model.",
        "{url} 的服务器不提供 {model!r}；它提供 {served}。请用 --model 传入其中一个。"),
    "remote.failed": ("{reason:sentence} Your conversation is kept; try again.",
                      "{reason:sentence}对话已保留，请重试。"),
    "remote.failed_at_start": ("{reason:sentence}", "{reason:sentence}"),
    "remote.cut_kept": (
        "The answer was cut off: {reason:clause}. The part that arrived is kept; Regenerate or ask again.",
        "回答被截断：{reason:clause}。已收到的部分已保留；请重新生成或再问一次。"),
    "remote.cut": ("The answer was cut off: {reason:clause}. Try again.", "回答被截断：{reason:clause}。请重试。"),
    "remote.stream_ended": ("the stream ended before the answer was finished", "回答结束前数据流就中断了"),
    "remote.timeout": ("the model server at {url} did not answer within {seconds:g} s (time-out); it may be overloaded",
                       "{url} 的模型服务器没有在 {seconds:g} 秒内回答（超时）；它可能负载过高"),
    "remote.connection_lost": ("the connection to the model server at {url} was lost ({cause})",
                               "与 {url} 的模型服务器的连接断开了（{cause}）"),
    "remote.unreachable": ("cannot reach the model server at {url} ({cause}); is it running?",
                           "无法连接 {url} 的模型服务器（{cause}）；它在运行吗？"),
    "remote.reported": ("the model server at {url} reported an error: {detail}",
                        "{url} 的模型服务器报告了错误：{detail}"),
    "remote.unreadable": ("the model server at {url} sent a reply this app cannot read ({kind})",
                          "{url} 的模型服务器发来了本应用无法读取的回复（{kind}）"),
    "remote.image_limit": (
        "The model server takes at most {limit} image(s) per prompt{has}. Remove an image or start a new chat (the "
        "operator can raise vLLM's --limit-mm-per-prompt to match --max-images).",
        "模型服务器每个提示词最多接受 {limit} 张图片{has}。请移除一张图片或开始新对话（运营者可以调高 vLLM 的 "
        "--limit-mm-per-prompt 以匹配 --max-images）。"),
    "remote.image_limit_has": (" and this conversation has {count}", "，而这个对话有 {count} 张"),
    "remote.refused": ("The model server refused the request (HTTP 400): {detail}",
                       "模型服务器拒绝了请求（HTTP 400）：{detail}"),
    "remote.api_key": ("The model server refused the API key (HTTP {status}). Check --api-key (LLAVA_APP_API_KEY).",
                       "模型服务器拒绝了 API 密钥（HTTP {status}）。请检查 --api-key（LLAVA_APP_API_KEY）。"),
    "remote.unknown_model": ("The model server does not know model {model!r} (HTTP 404): {detail}",
                             "模型服务器不认识模型 {model!r}（HTTP 404）：{detail}"),
    "remote.too_large": (
        "The request is too large for the model server (HTTP 413). Use fewer or smaller images, or start a new chat.",
        "请求对模型服务器来说太大了（HTTP 413）。请使用更少或更小的图片，或开始新对话。"),
    "remote.busy": ("The model server is busy (HTTP 429, too many requests). Wait a moment.",
                    "模型服务器正忙（HTTP 429，请求过多）。请稍等。"),
    "remote.server_failed": ("The model server failed (HTTP {status}): {detail}",
                             "模型服务器出错（HTTP {status}）：{detail}"),
    "remote.status": ("The model server answered HTTP {status}: {detail}", "模型服务器返回了 HTTP {status}：{detail}"),
    "remote.too_long": (
        "The model server finds this conversation longer than its context window ({detail}), even with the older "
        "turns left out. Remove a picture, lower max new tokens, or start a new chat; your conversation is kept.",
        "模型服务器认为这个对话超出了它的上下文窗口（{detail}），即使去掉了较早的轮次也是如此。请移除一张图片、调低"
        "最大新词元数或开始新对话；对话已保留。"),
}
