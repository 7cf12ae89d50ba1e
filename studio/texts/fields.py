"""Every config field's label and help, English and Chinese side by side.

The English label is the field's own name (what the YAML file and `--flag` say). A help text
names a rule's number through a placeholder filled from the constant the rule reads, so the
help cannot drift from the code.
"""
from __future__ import annotations

from typing import NamedTuple

from studio.config import GROUPS, LORA_DROPOUT
from studio.models.shapes import SMALL_MODEL_PARAMS


class FieldText(NamedTuple):
    label_zh: str
    en: str
    zh: str


CONSTANTS = {"small_model": f"{SMALL_MODEL_PARAMS / 1e9:.0f}B", "lora_dropout": LORA_DROPOUT}

FIELDS: dict[str, FieldText] = {
    "model_name": FieldText("基座模型",
                            "Hub id or local folder of the base model.",
                            "基座模型的 Hub id 或本地文件夹。"),
    "output_dir": FieldText("输出目录",
                            "Run folder: config, metrics, checkpoints, adapter.",
                            "本次运行的文件夹：配置、指标、checkpoint 和适配器。"),
    "data_path": FieldText("数据路径",
                           "CSV, JSON, JSONL, Parquet, a saved dataset folder or a Hub dataset "
                           "id.",
                           "CSV、JSON、JSONL、Parquet 文件，save_to_disk 保存的数据集文件夹，或 "
                           "Hub 数据集 id。"),
    "dataset_format": FieldText("数据格式",
                                "Shape of the rows; auto detects it from the columns.",
                                "每行数据的结构；auto 会根据列名自动识别。"),
    "column_mapping": FieldText("列映射",
                                "Role -> column name, overriding detection (e.g. {{instruction: "
                                "question, response: answer}}).",
                                "角色 -> 列名，覆盖自动识别（例如 {{instruction: question, "
                                "response: answer}}）。"),
    "role_mapping": FieldText("角色映射",
                              "Role tag -> system/user/assistant/tool for ShareGPT or messages "
                              "data, overriding detection (e.g. {{bot: assistant}}).",
                              "ShareGPT 或 messages 数据中的角色标签 -> "
                              "system/user/assistant/tool，覆盖自动识别（例如 {{bot: assistant}}"
                              "）。"),
    "prompt_template": FieldText("提示模板",
                                 "Custom template with {{column}} placeholders; the part from "
                                 "{{response}} on is trained. Empty: the model's chat template.",
                                 "带 {{列名}} 占位符的自定义模板；从 {{response}} 起的部分参与训"
                                 "练。留空则使用模型的对话模板。"),
    "system_prompt": FieldText("系统提示词",
                               "System message put before every conversation that has none.",
                               "加在每一段没有系统消息的对话前面的系统消息。"),
    "template_system_prompt": FieldText("模板自带的系统提示",
                                        "The system prompt some chat templates add by themselves "
                                        "to a conversation that has none (SmolLM2's names it "
                                        "SmolLM): keep it, or drop it (an empty system turn). "
                                        "system_prompt, when set, replaces it either way.",
                                        "有些对话模板会给没有系统消息的对话自动加上系统提示（"
                                        "SmolLM2 的模板会自称 SmolLM）：keep 保留，drop 去掉（留"
                                        "一个空的系统轮次）。设置了 system_prompt 时，两种情况下"
                                        "都由它替换。"),
    "enable_thinking": FieldText("思考模式",
                                 "Qwen3 thinking mode in the chat template (<think> blocks).",
                                 "对话模板中的 Qwen3 思考模式（<think> 块）。"),
    "train_on_prompt": FieldText("训练提示部分",
                                 "Also train on prompt tokens (default: responses only).",
                                 "提示部分的 token 也参与训练（默认只训练回答）。"),
    "max_seq_length": FieldText("最大序列长度",
                                "Longest sequence in tokens; longer rows are cut.",
                                "序列的最大 token 数；更长的行会被截断。"),
    "val_size": FieldText("验证集大小",
                          "Validation split: a fraction (<1) or a number of rows (>=1).",
                          "验证集划分：小于 1 表示比例，大于等于 1 表示行数。"),
    "method": FieldText("训练方法",
                        "What is taught: sft learns the answers in the rows; dpo learns which of "
                        "two answers to prefer, from rows with a prompt, a chosen and a rejected "
                        "answer (the adapter off is the reference model, so none is loaded).",
                        "教什么：sft 学习数据里的回答；dpo 从带有提示、较好回答（chosen）和较差回答"
                        "（rejected）的数据中学习更偏好哪一个（关掉适配器就是参考模型，不另外加载）。"),
    "beta": FieldText("偏好强度",
                      "DPO's beta: how far the tuned model may move from the reference; higher "
                      "keeps it closer (0.1 is usual).",
                      "DPO 的 beta：微调后的模型可以偏离参考模型多远；越大越接近参考模型"
                      "（常用 0.1）。"),
    "loss_type": FieldText("偏好损失",
                           "DPO's loss: sigmoid (the paper's), ipo (a squared margin, steadier on "
                           "small sets), hinge, or robust (for noisy labels).",
                           "DPO 的损失：sigmoid（论文中的）、ipo（平方间隔，小数据集上更稳）、hinge，"
                           "或 robust（标签有噪声时）。"),
    "backend": FieldText("训练后端",
                         "Training engine; auto picks unsloth on CUDA (transformers with "
                         "compiled layers for a model under {small_model} parameters at short "
                         "micro-batches), mlx on Apple Silicon, else transformers. scripted "
                         "trains no model: a known event sequence, for trying the studio.",
                         "训练引擎；auto 在 CUDA 上选 unsloth（参数少于 {small_model} 且微批次短"
                         "的模型改用编译解码层的 transformers），在 Apple Silicon 上选 mlx，否则"
                         "选 transformers。scripted 不训练模型，只回放一段固定的事件序列，用于试"
                         "用本工具。"),
    "lora_r": FieldText("LoRA 秩",
                        "LoRA rank.",
                        "LoRA 的秩。"),
    "lora_alpha": FieldText("LoRA 缩放系数",
                            "LoRA scale numerator (scale = alpha / r).",
                            "LoRA 缩放的分子（缩放 = alpha / r）。"),
    "target_modules": FieldText("目标模块",
                                "Layers that get adapters (q_proj k_proj v_proj o_proj gate_proj "
                                "up_proj down_proj).",
                                "加适配器的层（q_proj k_proj v_proj o_proj gate_proj up_proj "
                                "down_proj）。"),
    "lora_dropout": FieldText("LoRA 丢弃率",
                              "Dropout on the LoRA input (auto: {lora_dropout}; 0 with unsloth, "
                              "whose fused LoRA kernels need it).",
                              "LoRA 输入上的 dropout（auto：{lora_dropout}；使用 unsloth 时为 0，"
                              "它的融合 LoRA 算子要求如此）。"),
    "bias": FieldText("偏置",
                      "Which biases train.",
                      "哪些偏置参与训练。"),
    "task_type": FieldText("任务类型",
                           "PEFT task type; Qwen3 is decoder-only, so CAUSAL_LM.",
                           "PEFT 任务类型；Qwen3 是仅解码器模型，所以是 CAUSAL_LM。"),
    "lora_layers": FieldText("LoRA 层数",
                             "MLX only: how many of the last layers get adapters (-1: all).",
                             "仅 MLX：最后多少层加适配器（-1：全部）。"),
    "learning_rate": FieldText("学习率",
                               "Peak learning rate.",
                               "峰值学习率。"),
    "batch_size": FieldText("批大小",
                            "Rows per device step.",
                            "每个设备每步处理的行数。"),
    "gradient_accumulation_steps": FieldText("梯度累积步数",
                                             "Steps summed before each optimiser update.",
                                             "每次优化器更新前累加的步数。"),
    "num_train_epochs": FieldText("训练轮数",
                                  "Passes over the training rows.",
                                  "遍历训练数据的次数。"),
    "max_steps": FieldText("最大步数",
                           "Stop after this many optimiser steps (overrides epochs).",
                           "优化器更新这么多步后停止（优先于训练轮数）。"),
    "warmup_ratio": FieldText("预热比例",
                              "Share of steps spent warming the learning rate up.",
                              "用于学习率预热的步数占比。"),
    "lr_scheduler_type": FieldText("学习率调度",
                                   "Learning-rate schedule after warm-up.",
                                   "预热之后的学习率变化方式。"),
    "weight_decay": FieldText("权重衰减",
                              "AdamW weight decay.",
                              "AdamW 的权重衰减。"),
    "max_grad_norm": FieldText("梯度裁剪",
                               "Gradient clipping norm.",
                               "梯度裁剪的范数上限。"),
    "packing": FieldText("序列打包",
                         "Pack rows into micro-batches of tokens_per_batch tokens (auto: off; "
                         "batches are padding-free either way).",
                         "把多行打包成每批 tokens_per_batch 个 token 的微批次（auto：关闭；两种方"
                         "式下批次都不含填充）。"),
    "tokens_per_batch": FieldText("每批 token 数",
                                  "With packing: tokens in one micro-batch (auto: the most that "
                                  "fit in free GPU memory).",
                                  "打包时一个微批次的 token 数（auto：空闲显存能容纳的最大值）。"),
    "gradient_checkpointing": FieldText("梯度检查点",
                                        "Recompute activations to save memory (auto: only where "
                                        "memory needs it).",
                                        "重算激活值以节省内存（auto：仅在内存需要时开启）。"),
    "compile_layers": FieldText("编译解码层",
                                "Compile each decoder layer with torch.compile (transformers "
                                "backend): fewer, fused kernels a step; the first steps wait for "
                                "it (auto: on one GPU, for a model under {small_model} "
                                "parameters whose micro-batches are short and come in few "
                                "lengths, and with fp8_weights; else off).",
                                "用 torch.compile 编译每个解码层（transformers 后端）：每步更少、"
                                "融合的内核；前几步需等待编译（auto：单 GPU 上、参数少于 "
                                "{small_model} 且微批次短、长度种类少的模型开启，开启 "
                                "fp8_weights 时也开启，其余关闭）。"),
    "layer_graphs": FieldText("CUDA 图重放",
                              "Replay the compiled layers as CUDA graphs (with compile_layers, "
                              "one GPU): a step costs the host almost nothing; each micro-batch "
                              "length is recorded once (auto: on where micro-batches come in few "
                              "lengths and nearly none recomputes a layer).",
                              "把编译后的解码层作为 CUDA 图重放（需开启 compile_layers，单 GPU）"
                              "：每步几乎不占用主机时间；每种微批次长度只录制一次（auto：在微批次"
                              "长度种类少、且几乎没有微批次需要重算任何层时开启）。"),
    "whole_logits": FieldText("整段 logits 损失",
                              "Score the loss over a micro-batch's whole logits at once, not in "
                              "chunks (transformers backend): faster, where they fit (auto: on "
                              "one GPU where the batch plan fits them with no layer recomputed; "
                              "on a CPU under 2 GiB).",
                              "一次对微批次的全部 logits 计算损失，而不分块（transformers 后端）"
                              "：放得下时更快（auto：单 GPU 上在批次规划无需重算任何层时开启；"
                              "CPU 上在 2 GiB 以内时开启）。"),
    "fused_loss": FieldText("单核融合损失",
                            "Score the loss in one kernel (CUDA: Unsloth's own where Unsloth "
                            "trains, else cut-cross-entropy): the projection onto the vocabulary "
                            "and the cross-entropy together, no logits held; the gradient is "
                            "exact (auto: on one GPU, for micro-batches of 4,096 tokens or more).",
                            "用一个 kernel 计算损失（CUDA：Unsloth 训练时用 Unsloth 自己的，否则"
                            "用 cut-cross-entropy）：投影到词表与交叉熵一起完成，不保存 logits；"
                            "梯度是精确的（auto：单个 GPU 上、微批次平均 4,096 个 token 及以上时"
                            "开启）。"),
    "seed": FieldText("随机种子",
                      "Random seed for the split, LoRA init and shuffling.",
                      "用于数据划分、LoRA 初始化和打乱顺序的随机种子。"),
    "fp16": FieldText("float16 训练",
                      "Train in float16 (auto: on GPUs without bf16).",
                      "用 float16 训练（auto：在不支持 bf16 的 GPU 上开启）。"),
    "bf16": FieldText("bfloat16 训练",
                      "Train in bfloat16 (auto: where the GPU or CPU has it natively).",
                      "用 bfloat16 训练（auto：GPU 或 CPU 原生支持时开启）。"),
    "load_in_4bit": FieldText("4 位加载",
                              "QLoRA: load the base model in 4-bit NF4 (auto: only when 16-bit "
                              "weights would not fit).",
                              "QLoRA：以 4 位 NF4 加载基座模型（auto：仅在 16 位权重放不下时开启"
                              "）。"),
    "load_in_8bit": FieldText("8 位加载",
                              "Load the base model in 8-bit.",
                              "以 8 位加载基座模型。"),
    "fp8_weights": FieldText("fp8 权重",
                             "Keep the frozen base weights in fp8 and run their matmuls on fp8 "
                             "tensor cores (one NVIDIA GPU of compute capability 8.9+; "
                             "transformers backend, layers compiled): faster where these matmuls "
                             "are most of a step, as at 8B. Those matmuls round to fp8's 3 "
                             "mantissa bits; the adapters, attention and loss stay 16-bit, and "
                             "the chat and exports use the 16-bit weights.",
                             "把冻结的基座权重存为 fp8，并在 fp8 张量核心上做它们的矩阵乘法（一块"
                             "计算能力 8.9 及以上的 NVIDIA GPU；transformers 后端，解码层编译）："
                             "在这些矩阵乘法占一步大部分时间的场合更快，如 8B。这些乘法舍入到 "
                             "fp8 的 3 位尾数；适配器、注意力和损失仍为 16 位，对话和导出使用 16 "
                             "位权重。"),
    "cpu_only": FieldText("仅用 CPU",
                          "Train on the CPU even if a GPU is present (auto: when no GPU is "
                          "found).",
                          "即使有 GPU 也在 CPU 上训练（auto：找不到 GPU 时开启）。"),
    "device_map": FieldText("设备映射",
                            "Where the model's layers go: auto, cpu, cuda, cuda:N.",
                            "模型各层放在哪里：auto、cpu、cuda、cuda:N。"),
    "num_gpus": FieldText("GPU 数",
                          "GPUs this machine trains on, one process each (auto: every visible "
                          "GPU). With cpu_only: that many CPU processes (gloo), for trying the "
                          "distributed path without a GPU.",
                          "本机用于训练的 GPU 数，每个一个进程（auto：全部可见 GPU）。开启 "
                          "cpu_only 时为 CPU 进程数（gloo），用于在没有 GPU 时试用分布式训练。"),
    "distributed": FieldText("分布式方式",
                             "How several processes share the work: ddp (each holds the model, "
                             "data split), fsdp (FSDP2: frozen base and LoRA sharded) or "
                             "deepspeed (ZeRO-3); auto: ddp when the model fits one GPU, else "
                             "fsdp.",
                             "多个进程如何分担：ddp（每个进程一份模型，数据切分）、fsdp（FSDP2："
                             "冻结的基座与 LoRA 分片）或 deepspeed（ZeRO-3）；auto：模型放得进一"
                             "张 GPU 时用 ddp，否则 fsdp。"),
    "nnodes": FieldText("机器数",
                        "Machines in the run (each runs this same command).",
                        "参与训练的机器数（每台运行同一条命令）。"),
    "node_rank": FieldText("本机序号",
                           "This machine's number among them (0 writes the run folder).",
                           "本机在其中的序号（0 号写运行文件夹）。"),
    "master_addr": FieldText("主节点地址",
                             "Address of machine 0, where the processes meet.",
                             "0 号机器的地址，各进程在此汇合。"),
    "master_port": FieldText("主节点端口",
                             "Port on machine 0 where the processes meet.",
                             "0 号机器上各进程汇合的端口。"),
    "logging_steps": FieldText("日志间隔",
                               "Log train loss every N steps.",
                               "每 N 步记录一次训练 loss。"),
    "eval_steps": FieldText("评估间隔",
                            "Evaluate on the validation split every N steps.",
                            "每 N 步在验证集上评估一次。"),
    "save_steps": FieldText("保存间隔",
                            "Write a checkpoint every N steps.",
                            "每 N 步保存一个 checkpoint。"),
    "save_total_limit": FieldText("checkpoint 保留数",
                                  "Checkpoints kept (oldest deleted first).",
                                  "最多保留的 checkpoint 数（最旧的先删除）。"),
    "num_samples": FieldText("评估样例数",
                             "Validation prompts answered greedily at every evaluation, to watch "
                             "the answers change (samples.jsonl); 0: none.",
                             "每次评估时用贪心解码回答的验证集提示数，用来观察回答的变化（"
                             "samples.jsonl）；0：不生成。"),
    "sample_prompts": FieldText("自定义样例提示",
                                "Your own prompts to answer at every evaluation instead (one a "
                                "line in the page).",
                                "每次评估时改为回答你自己的提示（页面中每行一条）。"),
    "report_to": FieldText("同时上报到",
                           "Also report to: wandb (Weights & Biases; offline without an API key "
                           "or network), tensorboard (run_dir/tensorboard), trackio (local "
                           "dashboard: trackio show).",
                           "同时上报到：wandb（Weights & Biases；没有 API 密钥或网络时离线记录）"
                           "、tensorboard（run_dir/tensorboard）、trackio（本地看板：运行“trackio "
                           "show”打开）。"),
    "use_wandb": FieldText("使用 W&B",
                           "Also log to Weights & Biases (the same as wandb in report_to).",
                           "同时记录到 Weights & Biases（与在 report_to 中选 wandb 相同）。"),
    "wandb_project": FieldText("项目名",
                               "Project name in W&B and trackio.",
                               "W&B 和 trackio 中的项目名。"),
    "wandb_run_name": FieldText("运行名",
                                "Run name in W&B and trackio (default: the run folder's name).",
                                "W&B 和 trackio 中的运行名（默认：运行文件夹名）。"),
}

GROUPS_ZH: dict[str, str] = {
    "Model and data": "模型与数据", "Method": "训练方法", "LoRA": "LoRA 参数", "Optimisation": "优化",
    "Precision and quantisation": "精度与量化", "Logging and checkpoints": "日志与 checkpoint",
    "Tracking": "实验跟踪", "Several GPUs": "多 GPU 与多机"}
assert set(GROUPS_ZH) == set(GROUPS), "a group without its Chinese, or Chinese for a lost one"


def field_help(name: str, lang: str = "en") -> str:
    """A config field's help in `lang` ("en" or "zh"), its rules' numbers filled in."""
    text = FIELDS[name]
    return (text.zh if lang == "zh" else text.en).format(**CONSTANTS)


def field_label(name: str, lang: str = "en") -> str:
    """The field's name, with its Chinese before it on the Chinese page."""
    return f"{FIELDS[name].label_zh} ({name})" if lang == "zh" else name
