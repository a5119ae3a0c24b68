# The paper's mixed model in R, for the cross-check of rmvalues.stats.fit_mixed_model
# (rmvalues.stats.fit_paper_model_r runs it; Christian et al. 2026 fitted it with nlme::lme).
#
# Usage: Rscript paper_lme.R DATA_CSV LEVELS_CSV FORMULA OUT_DIR [CONTROL]
#   DATA_CSV    rm, family, category, framing, median_rank (one row per RM, prompt and category)
#   LEVELS_CSV  factor, level: every factor's levels in order, the first the reference (treatment coding)
#   FORMULA     the fixed effects, e.g. "median_rank ~ family * category * framing"
#   CONTROL     optional nlme::lmeControl settings, "name=value,name=value" (e.g. "niterEM=0"); default none
#               (nlme's defaults, as the paper)
# Writes to OUT_DIR:
#   nlme.csv          term, coef, se, df, t, p: nlme::lme(FORMULA, random = ~1 | rm), REML, containment df
#   satterthwaite.csv term, coef, se, df, t, p: lmerTest::lmer(FORMULA + (1 | rm), REML = TRUE)
#   fit.csv           one row: the variance components and REML log-likelihoods of both fits, versions
args <- commandArgs(trailingOnly = TRUE)
if (!length(args) %in% 4:5) stop("usage: Rscript paper_lme.R DATA_CSV LEVELS_CSV FORMULA OUT_DIR [CONTROL]")
data_csv <- args[1]
levels_csv <- args[2]
form <- as.formula(args[3])
out_dir <- args[4]
control <- list()
if (length(args) == 5 && nzchar(args[5])) {
  for (kv in strsplit(args[5], ",", fixed = TRUE)[[1]]) {
    parts <- strsplit(kv, "=", fixed = TRUE)[[1]]
    if (length(parts) != 2) stop(sprintf("CONTROL: %s is not name=value", kv))
    control[[trimws(parts[1])]] <- type.convert(trimws(parts[2]), as.is = TRUE)
  }
}

suppressPackageStartupMessages({
  library(nlme)
  library(lmerTest)
})

d <- read.csv(data_csv, colClasses = c(rm = "character", family = "character", category = "character",
                                       framing = "character", median_rank = "numeric"))
lv <- read.csv(levels_csv, colClasses = "character")
for (f in unique(lv$factor)) {
  levels_f <- lv$level[lv$factor == f]
  unknown <- setdiff(unique(d[[f]]), levels_f)
  if (length(unknown) > 0) {
    stop(sprintf("the data have %s level(s) %s that LEVELS_CSV lacks: list every level",
                 f, paste(unknown, collapse = ", ")))
  }
  d[[f]] <- factor(d[[f]], levels = levels_f)
}
d$rm <- factor(d$rm)
options(contrasts = c("contr.treatment", "contr.poly"))

num <- function(x) sprintf("%.17g", x)
coef_table <- function(tab, file) {
  out <- data.frame(term = rownames(tab), coef = num(tab[, 1]), se = num(tab[, 2]), df = num(tab[, 3]),
                    t = num(tab[, 4]), p = num(tab[, 5]))
  write.csv(out, file.path(out_dir, file), row.names = FALSE)
}

m <- lme(form, random = ~ 1 | rm, data = d, method = "REML", control = do.call(lmeControl, control))
coef_table(summary(m)$tTable, "nlme.csv")

form_lmer <- update(form, . ~ . + (1 | rm))
m2 <- lmerTest::lmer(form_lmer, data = d, REML = TRUE)
coef_table(summary(m2, ddf = "Satterthwaite")$coefficients, "satterthwaite.csv")

vc2 <- as.data.frame(VarCorr(m2))
fit <- data.frame(
  rm_variance = num(as.numeric(getVarCov(m))[1]),
  residual_variance = num(m$sigma^2),
  loglik = num(as.numeric(logLik(m))),
  lmer_rm_variance = num(vc2$vcov[vc2$grp == "rm"]),
  lmer_residual_variance = num(vc2$vcov[vc2$grp == "Residual"]),
  lmer_loglik = num(as.numeric(logLik(m2))),
  n_obs = nrow(d),
  n_groups = nlevels(d$rm),
  r_version = R.version.string,
  nlme_version = as.character(packageVersion("nlme")),
  lmertest_version = as.character(packageVersion("lmerTest"))
)
write.csv(fit, file.path(out_dir, "fit.csv"), row.names = FALSE)
