"""Refusals: a run, an action or a path the studio will not take, each with what to do instead."""

MESSAGES: dict[str, tuple[str, str]] = {
    # ---- one job at a time in a runs folder (studio.service.actions)
    "refuse.training": ("A run is already training in {runs}: {name}.",
                        "{runs} 中已有一个运行正在训练：{name}。"),
    "refuse.one_job": (
        "{training} One job runs at a time, so that two runs never fight over memory: stop it "
        "(Stop on the Train tab, or python -m studio stop {run}) or wait for it to finish.",
        "{training}同一时间只运行一个任务，以免两个运行争抢内存：请停止它（在“训练”页点“停止”，"
        "或运行 python -m studio stop {run}），或等它结束。"),
    "refuse.one_job.resume": ("{training} Stop it first; one job runs at a time.",
                              "{training}请先停止它；同一时间只运行一个任务。"),
    "refuse.one_job.waits": (
        "{training} {why}, so it waits for that run: stop it or wait for it to finish.",
        "{training}{why}，所以要等那个运行结束：请停止它，或等它结束。"),
    "refuse.waits.evaluate": ("Evaluation loads two models", "评估要加载两个模型"),
    "refuse.waits.export": ("Exporting loads the base model", "导出要加载基础模型"),

    # ---- the preflight of a run
    "refuse.no_data": (
        "No dataset: drop a file on the Data tab or give data_path (--data PATH on the command "
        "line): a file, a saved dataset folder or a Hub dataset id.",
        "没有数据集：在“数据”页放入一个文件，或给出 data_path（命令行中为 --data PATH）：可以是"
        "一个文件、一个保存的数据集文件夹或一个 Hub 数据集 id。"),
    "refuse.no_trained_tokens": (
        "No row has trained tokens after templating: check the column mapping (the response "
        "column must hold the answers).",
        "套用模板后没有任何一行含有要训练的 token：请检查列映射（response 列必须是回答）。"),
    "refuse.memory": (
        "The memory estimate ({total:.1f} GiB) is more than the {free:.1f} GiB free in "
        "{where}. To fit, {advice}. Or start anyway: tick 'Start even if the estimate does not "
        "fit' on the page, pass --allow-over-memory on the command line, or "
        "allow_over_memory=True in Python.",
        "内存估计（{total:.1f} GiB）超过了 {where} 中空闲的 {free:.1f} GiB。要放得下，{advice}。"
        "也可以照样开始：在页面上勾选“即使估计放不下也开始”，在命令行中加 --allow-over-memory，"
        "或在 Python 中传 allow_over_memory=True。"),

    # ---- resuming, measuring and keeping runs
    "refuse.resume.no_run": ("{run} holds no run to resume", "{run} 中没有可以继续的运行"),
    "refuse.resume.no_checkpoint": (
        "{name} has no checkpoint yet, so it cannot resume: start a new run (checkpoints are "
        "written every save_steps steps).",
        "{name} 还没有检查点，所以无法继续：请开始一个新的运行（每 save_steps 步写一次检查点）。"),
    "refuse.measure.unfinished": ("the measurement did not finish: {reason}",
                                  "测速没有完成：{reason}"),
    "refuse.rename.bad_name": (
        "{name!r} cannot name a run: use letters, digits, '.', '_' and '-' (up to 80, starting "
        "with a letter or digit)",
        "{name!r} 不能用作运行的名字：请用字母、数字、'.'、'_' 和 '-'（最多 80 个，以字母或数字"
        "开头）"),
    "refuse.rename.taken": ("{name} is taken in {runs}: choose another name",
                            "{runs} 中已有 {name}：请换一个名字"),
    "refuse.busy": ("{name} is training, so it cannot be {what}: stop it first",
                    "{name} 正在训练，不能{what}：请先停止它"),
    "refuse.busy.renamed": ("renamed", "重命名"),
    "refuse.busy.deleted": ("deleted", "删除"),
    "refuse.not_own_run": ("{run} is not a run in {runs}", "{run} 不是 {runs} 中的运行"),
    "refuse.no_config": ("{run} is not a run: it holds no config.yaml",
                         "{run} 不是一个运行：其中没有 config.yaml"),

    # ---- what a served page may touch (studio.service.paths)
    "refuse.judge_host": (
        "the judge at {url!r} is not on this machine: the operator can allow its host with "
        "--allow-judge HOST",
        "位于 {url!r} 的评判模型不在本机上：服务器的管理员可以用 --allow-judge HOST 允许它的主机"),
    "refuse.hub_dataset_cli": (
        "a Hub dataset whose name is also a path where the server runs is loaded from the "
        "command line only",
        "名字同时也是服务器所在位置下某个路径的 Hub 数据集，只能从命令行加载"),

    # ---- exports (studio.export.formats)
    "refuse.export.format": ("unknown export format {fmt!r}: choose one of {choices}",
                             "未知的导出格式 {fmt!r}：请从 {choices} 中选一个"),
    "refuse.export.quant": ("unknown quantisation {quant!r}: choose one of {choices}",
                            "未知的量化方式 {quant!r}：请从 {choices} 中选一个"),
    "refuse.export.q4_k_m": (
        "q4_k_m needs llama.cpp's quantiser: pip install llama-cpp-python (it builds from "
        "source, a few minutes), or export f16 or q8_0",
        "q4_k_m 需要 llama.cpp 的量化器：pip install llama-cpp-python（从源码构建，需要几分钟），"
        "或者导出 f16 或 q8_0"),
    "refuse.export.no_adapter": ("{run} is not a run folder with an adapter",
                                 "{run} 不是一个带适配器的运行文件夹"),
    "refuse.export.scripted": ("a scripted run trains no model: there are no weights to export",
                               "scripted 运行不训练模型：没有可导出的权重"),
    "refuse.export.exists": ("{out} already exists: choose another folder or delete it",
                             "{out} 已存在：请换一个文件夹，或把它删除"),

    # ---- a config that cannot be read (studio.config: from_dict, load, from_yaml)
    "config.unknown_fields": ("unknown config field(s): {names}", "未知的配置字段：{names}"),
    "config.file_missing": ("config file not found: {path}", "找不到配置文件：{path}"),
    "config.not_utf8": (
        "{path} is not UTF-8 text (byte 0x{byte:02x} at offset {offset}): save it as UTF-8",
        "{path} 不是 UTF-8 文本（偏移 {offset} 处的字节 0x{byte:02x}）：请以 UTF-8 保存"),
    "config.where": ("the config", "配置"),
    "config.yaml_invalid": ("{where} is not valid YAML: {error}",
                            "{where} 不是有效的 YAML：{error}"),
    "config.yaml_deep": ("{where} is nested too deeply to be a config",
                         "{where} 嵌套太深，不可能是配置"),
    "config.yaml_not_mapping": ("{where} must hold a mapping of config fields",
                                "{where} 必须是配置字段的映射"),
    "config.in": ("{where}: {problem}", "{where} 中：{problem}"),

    # ---- a field's value of the wrong type (studio.config._typed)
    "config.type.null": ("{name}: must be {kind}, got null", "{name}：必须是{kind}，实际为 null"),
    "config.type.wrong": ("{name}: must be {kind}, got {value}",
                          "{name}：必须是{kind}，实际为 {value}"),
    "config.type.finite": ("{name}: must be a finite number, got {value!r}",
                           "{name}：必须是有限的数字，实际为 {value!r}"),
    "config.type.list": ("{name}: must be a list of text, got {value}",
                         "{name}：必须是文本列表，实际为 {value}"),
    "config.type.mapping": ("{name}: must be a mapping of text to text, got {value}",
                            "{name}：必须是文本到文本的映射，实际为 {value}"),
    "config.kind.bool": ("true or false", "布尔值 true 或 false"),
    "config.kind.int": ("a whole number", "整数"),
    "config.kind.float": ("a number", "数字"),
    "config.kind.str": ("text", "文本"),
    "config.kind.list": ("a list", "列表"),
    "config.kind.dict": ("a mapping", "映射"),

    # ---- a field out of its bounds (studio.config._check_bounds)
    "config.bounds.choice": ("{name} must be one of {choices} (got {value!r})",
                             "{name} 必须是 {choices} 之一（当前为 {value!r}）"),
    "config.bounds.lora_r": ("lora_r must be at least 1 (got {value}); 8 or 16 is typical",
                             "lora_r 至少为 1（当前为 {value}）；常用 8 或 16"),
    "config.bounds.min": ("{name} must be at least {min} (got {value})",
                          "{name} 至少为 {min}（当前为 {value}）"),
    "config.bounds.max": ("{name} must be at most {max} (got {value})",
                          "{name} 至多为 {max}（当前为 {value}）"),

    # ---- settings that contradict each other or the hardware (FineTuningConfig.validate)
    "config.lora_alpha": ("lora_alpha must be positive", "lora_alpha 必须为正数"),
    "config.target_modules_empty": (
        "target_modules is empty: name at least one layer, e.g. q_proj v_proj",
        "target_modules 为空：请至少指定一层，例如 q_proj v_proj"),
    "config.4bit_and_8bit": ("load_in_4bit and load_in_8bit are both on: choose one",
                             "load_in_4bit 和 load_in_8bit 同时开启：请选其一"),
    "config.fp16_and_bf16": ("fp16 and bf16 are both on: choose one",
                             "fp16 和 bf16 同时开启：请选其一"),
    "config.no_cuda": (
        "a CUDA GPU was asked for (cpu_only off or device_map cuda) but none was found: turn "
        "cpu_only on",
        "要求使用 CUDA GPU（cpu_only 关闭或 device_map 为 cuda），但没有找到：请开启 cpu_only"),
    "config.cpu_only_device_map": ("cpu_only is on but device_map is {device_map}: use auto or cpu",
                                   "cpu_only 已开启，但 device_map 为 {device_map}：请用 auto 或 cpu"),
    "config.fp16_cpu": (
        "fp16 training needs a CUDA GPU; on the CPU leave fp16 off (training runs in float32)",
        "fp16 训练需要 CUDA GPU；在 CPU 上请关闭 fp16（训练以 float32 进行）"),
    "config.bf16_gpu": ("bf16 was asked for but this GPU has no bfloat16: use fp16",
                        "要求使用 bf16，但这块 GPU 不支持 bfloat16：请用 fp16"),
    "config.bf16_cpu": (
        "bf16 was asked for but this CPU has no native bfloat16 (AVX-512 BF16 or AMX): leave "
        "bf16 off, float32 is faster here",
        "要求使用 bf16，但这颗 CPU 没有原生 bfloat16（AVX-512 BF16 或 AMX）：请关闭 bf16，"
        "这里 float32 更快"),
    "config.bitsandbytes": ("4-bit/8-bit loading needs bitsandbytes: pip install bitsandbytes",
                            "4-bit/8-bit 加载需要 bitsandbytes：pip install bitsandbytes"),
    "config.unsloth_cpu": ("the unsloth backend needs an NVIDIA GPU: choose transformers",
                           "unsloth 后端需要 NVIDIA GPU：请选择 transformers"),
    "config.method_backend": (
        "{method} trains on the transformers backend; {backend} trains sft only here: choose "
        "backend auto or transformers",
        "{method} 在 transformers 后端上训练；{backend} 在这里只训练 sft：请把 backend 设为 auto 或 "
        "transformers"),
    "config.transformers_only": (
        "{name} applies to the transformers backend; {backend} runs its own kernels: leave "
        "{name} auto or off",
        "{name} 只对 transformers 后端起作用；{backend} 运行自己的内核：请把 {name} 设为 auto 或"
        "关闭"),
    "config.fused_loss.gpu": (
        "fused_loss runs on a CUDA GPU, in Unsloth's loss where Unsloth trains, else in "
        "cut-cross-entropy's kernel: pip install cut-cross-entropy",
        "fused_loss 在 CUDA GPU 上运行：由 Unsloth 训练时用 Unsloth 的损失，否则用 "
        "cut-cross-entropy 的内核：pip install cut-cross-entropy"),
    "config.fused_loss.cpu": (
        "fused_loss runs on a CUDA GPU, in Unsloth's loss where Unsloth trains, else in "
        "cut-cross-entropy's kernel: leave it auto or off on a CPU",
        "fused_loss 在 CUDA GPU 上运行：由 Unsloth 训练时用 Unsloth 的损失，否则用 "
        "cut-cross-entropy 的内核：在 CPU 上请设为 auto 或关闭"),
    "config.fused_loss.gpus": (
        "fused_loss is measured on one GPU; with several, leave it auto or off",
        "fused_loss 只在单块 GPU 上测过；多块 GPU 时请设为 auto 或关闭"),
    "config.fused_loss.whole_logits": (
        "fused_loss and whole_logits are two ways to score the loss: turn one of them off",
        "fused_loss 和 whole_logits 是计算损失的两种方式：请关闭其中一个"),
    "config.fused_loss.mlx": (
        "fused_loss is a CUDA kernel; the mlx backend scores its own loss: leave fused_loss "
        "auto or off",
        "fused_loss 是 CUDA 内核；mlx 后端自己计算损失：请把 fused_loss 设为 auto 或关闭"),
    "config.layer_graphs.compile": (
        "layer_graphs replays the compiled layers: turn compile_layers on",
        "layer_graphs 重放的是编译后的层：请开启 compile_layers"),
    "config.layer_graphs.checkpointing": (
        "layer_graphs replays layers that keep their activations, and with "
        "gradient_checkpointing on every layer recomputes: leave one of them auto or off",
        "layer_graphs 重放的层要保留激活值，而开启 gradient_checkpointing 后每一层都会重算："
        "请把其中一个设为 auto 或关闭"),
    "config.layer_graphs.one_gpu": (
        "layer_graphs records CUDA graphs on one GPU: leave it auto or off on a CPU or with "
        "several GPUs",
        "layer_graphs 在单块 GPU 上录制 CUDA graph：在 CPU 上或有多块 GPU 时请设为 auto 或关闭"),
    "config.mlx_quantised": (
        "the mlx backend loads quantised models by their id (e.g. "
        "mlx-community/Qwen3-0.6B-4bit): turn load_in_4bit/8bit off",
        "mlx 后端按 id 加载量化模型（例如 mlx-community/Qwen3-0.6B-4bit）：请关闭 "
        "load_in_4bit/8bit"),
    "config.prompt_template": (
        "prompt_template has no {{placeholders}}: name the columns, e.g. "
        "'{{instruction}}\\n{{response}}'",
        "prompt_template 中没有 {{占位符}}：请写出列名，例如 '{{instruction}}\\n{{response}}'"),
    "config.tracker.unknown": (
        "report_to {tracker!r} is not a tracker: choose wandb, tensorboard or trackio",
        "report_to {tracker!r} 不是实验跟踪工具：请选择 wandb、tensorboard 或 trackio"),
    "config.tracker.missing": ("report_to {tracker} needs the {tracker} package: "
                               "pip install {tracker}",
                               "report_to {tracker} 需要 {tracker} 包：pip install {tracker}"),

    # ---- fp8 weights
    "config.fp8.quantised": (
        "fp8_weights and 4-/8-bit loading are two ways to store the base weights: choose one",
        "fp8_weights 和 4-/8-bit 加载是存放基础权重的两种方式：请选其一"),
    "config.fp8.capability": (
        "fp8_weights needs fp8 tensor cores, which NVIDIA GPUs of compute capability 8.9 or "
        "newer have (Ada, Hopper, Blackwell); none here ({gpu}): turn fp8_weights off",
        "fp8_weights 需要 fp8 tensor core，计算能力 8.9 及以上的 NVIDIA GPU（Ada、Hopper、"
        "Blackwell）才有；这里的 GPU（{gpu}）没有：请关闭 fp8_weights"),
    "config.fp8.capability.cpu": (
        "fp8_weights needs fp8 tensor cores, which NVIDIA GPUs of compute capability 8.9 or "
        "newer have (Ada, Hopper, Blackwell); none here: turn fp8_weights off",
        "fp8_weights 需要 fp8 tensor core，计算能力 8.9 及以上的 NVIDIA GPU（Ada、Hopper、"
        "Blackwell）才有；这里没有：请关闭 fp8_weights"),
    "config.fp8.gpus": ("fp8_weights is measured on one GPU; with several, turn it off",
                        "fp8_weights 只在单块 GPU 上测过；多块 GPU 时请关闭它"),

    # ---- several GPUs and machines
    "config.node_rank": ("node_rank {rank} is not below nnodes {nnodes}: machines are "
                         "numbered from 0",
                         "node_rank {rank} 不小于 nnodes {nnodes}：机器从 0 开始编号"),
    "config.num_gpus": ("num_gpus is {asked} but this machine has {have} GPU(s): use at most "
                        "{have}",
                        "num_gpus 为 {asked}，但这台机器只有 {have} 块 GPU：最多用 {have}"),
    "config.one_process": ("the {backend} backend trains in one process: set num_gpus 1 and "
                           "nnodes 1, or choose transformers",
                           "{backend} 后端在单个进程中训练：请把 num_gpus 和 nnodes 设为 1，"
                           "或选择 transformers"),
    "config.qlora_fsdp": (
        "QLoRA (4-/8-bit weights) does not shard with FSDP here: use distributed ddp (each GPU "
        "holds the quantised model) or 16-bit weights with fsdp",
        "QLoRA（4-/8-bit 权重）在这里不能用 FSDP 分片：请用 distributed ddp（每块 GPU 各存一份"
        "量化模型），或用 16-bit 权重配合 fsdp"),
    "config.distributed_cpu": ("{distributed} needs GPUs; processes on the CPU use ddp",
                               "{distributed} 需要 GPU；CPU 上的进程请用 ddp"),
    "config.deepspeed": ("distributed deepspeed needs DeepSpeed: pip install deepspeed, or "
                         "choose fsdp",
                         "distributed deepspeed 需要 DeepSpeed：pip install deepspeed，或选择 "
                         "fsdp"),

    # ---- notes while a config is made
    "config.note.seq2seq": (
        "task_type SEQ_2_SEQ_LM is for encoder-decoder models; Qwen3 is decoder-only, so "
        "CAUSAL_LM is used.",
        "task_type SEQ_2_SEQ_LM 用于编码器-解码器模型；Qwen3 只有解码器，因此改用 CAUSAL_LM。"),
}
