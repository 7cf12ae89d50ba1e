"""What a run says as it goes and how it ended, and why a backend was chosen or cannot run."""

MESSAGES: dict[str, tuple[str, str]] = {
    # ---- the backend: why this one, why not another
    "backend.unknown": ("unknown backend {name!r}: choose one of auto, {names}",
                        "未知的后端 {name!r}：请从 auto、{names} 中选择"),
    "backend.not_importable": ("cannot be imported ({error})", "无法导入（{error}）"),
    "backend.cannot_run": ("the {name} backend cannot run here: {why}",
                           "{name} 后端无法在这里运行：{why}"),
    "backend.why.processes": (
        "transformers: {n} processes train through torch.distributed, which Unsloth does not "
        "run; the batches are the same padding-free ones",
        "transformers：{n} 个进程通过 torch.distributed 训练，Unsloth 不支持这种方式；批次仍是同样的"
        "无填充批次"),
    "backend.why.needs": (
        "transformers: {needs} asked for, which only it honours (Unsloth and MLX run kernels of "
        "their own)",
        "transformers：设置了 {needs}，只有它支持（Unsloth 和 MLX 用各自的内核）"),
    "backend.why.explicit": ("{name} (chosen explicitly)", "{name}（明确指定）"),
    "backend.why.unsloth": ("unsloth: an NVIDIA GPU was found and unsloth is installed",
                            "unsloth：找到了 NVIDIA GPU，且已安装 unsloth"),
    "backend.why.mlx": ("mlx: Apple Silicon was found and mlx-lm is installed",
                        "mlx：检测到 Apple Silicon，且已安装 mlx-lm"),
    "backend.why.fallback": ("transformers, the fallback (unsloth: {unsloth}; mlx: {mlx})",
                             "transformers，兜底选择（unsloth：{unsloth}；mlx：{mlx}）"),
    "backend.mlx.apple_only": ("auto picks it only on Apple Silicon",
                               "auto 只在 Apple Silicon 上选它"),
    "backend.unsloth.no_cuda": ("needs an NVIDIA GPU with CUDA, and none was found",
                                "需要带 CUDA 的 NVIDIA GPU，但没有找到"),
    "backend.unsloth.not_installed": ("not installed: pip install -e '.[cuda]'",
                                      "未安装：pip install -e '.[cuda]'"),
    "backend.mlx.not_loading": ("mlx is not installed or does not load here ({error}): {hint}",
                                "mlx 未安装或无法在这里加载（{error}）：{hint}"),
    "backend.mlx.no_lm": ("mlx-lm is not installed: {hint}", "未安装 mlx-lm：{hint}"),

    # ---- how several processes share a run
    "dist.where": ("{n} processes", "{n} 个进程"),
    "dist.where.machines": ("{n} processes on {machines} machines",
                            "{machines} 台机器上的 {n} 个进程"),
    "dist.cpu": ("ddp over {where} on the CPU (gloo): each holds the model and a share of a batch",
                 "在 CPU 上用 {where} 做 ddp（gloo）：每个进程持有整个模型和一批数据的一部分"),
    "dist.fsdp": ("fsdp (FSDP2) over {where}: the frozen base and the LoRA weights are sharded "
                  "({why})",
                  "用 {where} 做 fsdp（FSDP2）：冻结的基座和 LoRA 权重被分片（{why}）"),
    "dist.deepspeed": ("deepspeed ZeRO-3 over {where} (as set)",
                       "用 {where} 做 deepspeed ZeRO-3（按设置）"),
    "dist.ddp": ("ddp over {where}: each GPU holds the whole model and a share of a batch ({why})",
                 "用 {where} 做 ddp：每块 GPU 持有整个模型和一批数据的一部分（{why}）"),
    "dist.why.set": ("as set", "按设置"),
    "dist.why.fsdp": ("the 16-bit weights would not fit one GPU beside its activations",
                      "16 位权重加上激活值放不进一块 GPU"),
    "dist.why.ddp": ("the model and its activations fit one GPU", "模型和激活值放得进一块 GPU"),
    "dist.few_rows": ("{how}; {rows} rows a GPU an update make short, host-bound steps that "
                      "spread poorly: 16 or more keep each GPU busy",
                      "{how}；每块 GPU 每次更新只有 {rows} 行，步子短、受主机限制，分摊效果差："
                      "16 行或更多才能让每块 GPU 保持忙碌"),

    # ---- what a run is doing (its status events)
    "run.processes": ("processes: {how}", "进程：{how}"),
    "run.backend": ("backend: {why}", "后端：{why}"),
    "run.batch_plan": ("batch plan: {planner}", "批次规划：{planner}"),
    "run.resuming": ("resuming from {checkpoint}", "从 {checkpoint} 继续"),
    "run.fresh_process": (
        "training in a fresh process: Unsloth, loaded into this one by an earlier run or chat, "
        "rewrote trl's SFTTrainer and transformers' layers for its own models, and a second run "
        "here would train on them",
        "在新进程中训练：之前的运行或对话已把 Unsloth 载入当前进程，它为自己的模型改写了 trl 的 "
        "SFTTrainer 和 transformers 的层，在这里再跑一次会用上这些改写"),
    "run.reporting": ("reporting to {name}", "正在上报到 {name}"),
    "run.preparing": ("preparing {path}", "正在准备 {path}"),
    "run.data": ("data: {train} rows to train, {eval} to evaluate ({format})",
                 "数据：{train} 行用于训练，{eval} 行用于评估（{format}）"),
    "run.loading": ("loading {model}", "正在加载 {model}"),
    "run.loading_unsloth": ("loading {model} with unsloth", "正在用 unsloth 加载 {model}"),
    "run.packed_attention": ("packed attention: {how}", "打包注意力：{how}"),
    "run.attaching": ("attaching LoRA adapters", "正在挂载 LoRA 适配器"),
    "run.fp8": ("fp8 weights: {n} frozen linear layers quantized",
                "fp8 权重：已量化 {n} 个冻结的线性层"),
    "run.training": ("training", "训练中"),

    # ---- how it ended
    "run.trained": ("trained {steps} steps", "训练了 {steps} 步"),
    "run.stopped": ("stopped at step {step} as asked; the adapter saved there is usable and "
                    "Resume continues",
                    "已按要求在第 {step} 步停止；那里保存的适配器可以使用，点“继续”可接着训练"),
    "run.killed": ("killed after not stopping within {seconds} s; its memory is freed",
                   "{seconds} 秒内没有停下，已强制结束；它占用的内存已释放"),
    "run.keyboard": ("interrupted from the keyboard; Resume continues from the last checkpoint",
                     "被键盘中断；点“继续”可从最后一个 checkpoint 接着训练"),
    "run.oom": ("out of memory: lower batch_size or max_seq_length, or turn on load_in_4bit",
                "内存不足：减小 batch_size 或 max_seq_length，或开启 load_in_4bit"),
    "run.model_not_loaded": ("the model could not be loaded: {error}", "无法加载模型：{error}"),
    "run.ended_unfinished": (
        "the training process ended without finishing (server restart, crash or kill); Resume "
        "continues from the last checkpoint",
        "训练进程没有完成就结束了（服务器重启、崩溃或被终止）；点“继续”可从最后一个 checkpoint "
        "接着训练"),
    "run.status_unreadable": ("status.json cannot be read: {error}", "无法读取 status.json：{error}"),
    "run.status_bad": ("status.json {problem}; the run's other files are untouched",
                       "status.json {problem}；这个运行的其他文件没有改动"),

    # ---- how far an evaluation or an export has come
    "progress.eval.data": ("preparing the evaluation rows", "正在准备评估数据"),
    "progress.eval.tasks.base": ("lm-eval tasks: the base model", "lm-eval 任务：基座模型"),
    "progress.eval.tasks.tuned": ("lm-eval tasks: the tuned model", "lm-eval 任务：微调后的模型"),
    "progress.eval.loss.base": ("held-out loss of the base model on {rows} rows",
                                "基座模型在 {rows} 行留出数据上的损失"),
    "progress.eval.loss.tuned": ("held-out loss of the fine-tuned model on {rows} rows",
                                 "微调后的模型在 {rows} 行留出数据上的损失"),
    "progress.eval.answer.base": ("the base model answers prompt {i} of {n}",
                                  "基座模型正在回答第 {i} 个提示（共 {n} 个）"),
    "progress.eval.answer.tuned": ("the fine-tuned model answers prompt {i} of {n}",
                                   "微调后的模型正在回答第 {i} 个提示（共 {n} 个）"),
    "progress.eval.judge.base": ("the judge scores the base answer to prompt {i}",
                                 "评判模型正在给基座模型对第 {i} 个提示的回答打分"),
    "progress.eval.judge.tuned": ("the judge scores the tuned answer to prompt {i}",
                                  "评判模型正在给微调后模型对第 {i} 个提示的回答打分"),
    "progress.eval.saved": ("report saved: {path}", "报告已保存：{path}"),
    "progress.export.merging": ("merging the adapter into {model}", "正在把适配器合并进 {model}"),
    "progress.export.merged": ("merged", "已合并"),
    "progress.export.copying": ("copying the adapter", "正在复制适配器"),
    "progress.export.gguf_lora": ("writing the GGUF LoRA", "正在写入 GGUF LoRA"),
    "progress.export.tensor": ("wrote {name} ({i}/{n})", "已写入 {name}（{i}/{n}）"),
    "progress.export.quantising": ("quantising to Q4_K_M with llama.cpp",
                                   "正在用 llama.cpp 量化为 Q4_K_M"),
    "progress.export.wrote": ("wrote {name}", "已写入 {name}"),
    "progress.export.done": ("exported to {folder}", "已导出到 {folder}"),

    # ---- what the plan holds (plan.yaml's values)
    "plan.value.none": ("none", "无"),
    "plan.value.on": ("on", "开"),
    "plan.value.off": ("off", "关"),
    "plan.value.rows": ("{rows} rows, padding-free", "{rows} 行，无填充"),
    "plan.value.pairs": ("{pairs} pairs (chosen and rejected), padded",
                         "{pairs} 个偏好对（较好与较差回答），带填充"),
    "plan.value.packs": ("packs of up to {tokens} tokens", "打包，每包最多 {tokens} 个 token"),
    "plan.value.per_micro_batch": ("per micro-batch: only layers a long one needs",
                                   "按微批次：只重算长微批次需要的层"),
    "plan.value.qlora": ("4-bit NF4 (QLoRA)", "4 位 NF4（QLoRA）"),
    "plan.value.8bit": ("8-bit", "8 位"),
    "plan.value.scripted_rows": ("{rows} rows (scripted: no model runs)",
                                 "{rows} 行（scripted：不运行模型）"),
    "plan.value.scripted_attention": ("none (scripted)", "无（scripted）"),
}
